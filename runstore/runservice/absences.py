"""Executors whose record is gone, and when each was last heard of."""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import datetime, timedelta

from runstore.clock import now


class Absences:
    """Executors without a record, each with when it was last heard of; thread-safe.

    The fetcher waits for such an executor to come back with its tasks' files until it
    has been gone past the executor timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_seen: dict[str, datetime] = {}

    def left(self, executor_id: str, last_seen: datetime | None) -> None:
        """The executor's record was deleted; it was last heard of at ``last_seen`` (None: now)."""
        with self._lock:
            self._last_seen[executor_id] = last_seen or now()

    def returned(self, executor_id: str) -> None:
        """The executor reported itself again."""
        with self._lock:
            self._last_seen.pop(executor_id, None)

    def gone_for_good(self, executor_id: str, timeout: timedelta) -> bool:
        """Whether an executor without a record has not been heard of for over ``timeout``.

        Its last status report counts, as recorded when its record was deleted; failing
        that (the runservice restarted since), when this was first asked of it.
        """
        with self._lock:
            last_seen = self._last_seen.setdefault(executor_id, now())
        return now() - last_seen > timeout

    def forget(self, holding: Collection[str], timeout: timedelta) -> None:
        """Forget the executors gone past ``timeout`` that are not in ``holding`` (hold no task)."""
        limit = now() - timeout
        with self._lock:
            for executor_id, last_seen in list(self._last_seen.items()):
                if executor_id not in holding and last_seen < limit:
                    del self._last_seen[executor_id]
