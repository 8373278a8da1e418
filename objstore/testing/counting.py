"""A store that counts the requests made of another: costs that should not grow, counted."""

from __future__ import annotations

import collections
import threading

from ..delegating import DelegatingStorage, Request
from ..storage import Storage


class CountingStorage(DelegatingStorage):
    """``storage``, counting each request made of it by kind (``"read"``, ``"list"``, ...).

    A listing counts one request per page of 1,000 entries, as S3 answers them. Thread-safe.
    """

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def _request(self, request: Request) -> None:
        with self._lock:
            self._counts[request] += 1

    @property
    def counts(self) -> dict[str, int]:
        """The requests so far, by kind."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        """All requests so far."""
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
