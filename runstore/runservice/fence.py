"""A store that refuses every change once its owner may have lost the lease."""

from __future__ import annotations

from collections.abc import Callable

from objstore import Storage
from objstore.delegating import DelegatingStorage, Request

_CHANGES = frozenset({"write", "delete", "copy"})


class FencedStorage(DelegatingStorage):
    """``storage``, where every write, delete and copy first calls ``check``.

    ``check`` raises (the runservice's ``LeaseLostError``) unless the lease holds long
    enough for the request to land: a runservice that lost its lease changes nothing.
    Reads and listings pass through.
    """

    def __init__(self, storage: Storage, check: Callable[[], None]) -> None:
        super().__init__(storage)
        self._check = check

    def _request(self, request: Request) -> None:
        if request in _CHANGES:
            self._check()
