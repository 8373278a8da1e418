"""When each executor was last heard of: soft state, in memory only.

An executor is heard of at each status report and each long poll it starts; it is alive
while that was at most ``timeout`` ago. Nothing of this is written to the store: a
runservice that takes over hears of every executor anew, giving each the full timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from runstore.clock import now


class Liveness:
    """The executors heard of, each with when; thread-safe."""

    def __init__(self, timeout: timedelta, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._heard: dict[str, float] = {}  # executor id -> when, on ``clock``

    def heard(self, executor_id: str) -> None:
        """The executor spoke now."""
        with self._lock:
            self._heard[executor_id] = self.clock()

    def alive(self, executor_id: str) -> bool:
        """Whether the executor was heard of within the timeout; one never heard of counts
        as heard of now (its record was loaded from the store)."""
        with self._lock:
            heard = self._heard.setdefault(executor_id, self.clock())
        return self.clock() - heard <= self.timeout.total_seconds()

    def last_heard(self, executor_id: str) -> datetime | None:
        """When the executor was last heard of (wall clock); None if never."""
        with self._lock:
            heard = self._heard.get(executor_id)
        return None if heard is None else now() - timedelta(seconds=self.clock() - heard)

    def forget(self, executor_id: str) -> None:
        with self._lock:
            self._heard.pop(executor_id, None)

    def reset(self, executor_ids: Iterable[str]) -> None:
        """Hear of exactly these executors now (on taking the lease)."""
        moment = self.clock()
        with self._lock:
            self._heard = dict.fromkeys(executor_ids, moment)
