"""A store that records each request made of it with the key it names, for counting by key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import BinaryIO

from objstore import CommonPrefix, ObjectInfo, Storage
from objstore.attributes import Attributes
from objstore.delegating import DelegatingStorage
from objstore.storage import Chunks


class RequestLog(DelegatingStorage):
    """``storage``, recording ``(kind, key or prefix)`` for every request (a listing once)."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []

    def _note(self, kind: str, key: str) -> None:
        with self._lock:
            self._requests.append((kind, key))

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._requests)

    def since(self, count: int, *, ignore: str = "runservice/lease") -> list[tuple[str, str]]:
        """The requests after the first ``count``, but those on keys starting with ``ignore``."""
        return [(kind, key) for kind, key in self.requests[count:] if not key.startswith(ignore)]

    def _write(
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes,
    ) -> str:
        self._note("write", key)
        return super()._write(
            key,
            chunks,
            persist=persist,
            if_none_match=if_none_match,
            if_match=if_match,
            attributes=attributes,
        )

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        self._note("read", key)
        return super()._read(key, start, end)

    def _stat(self, key: str) -> ObjectInfo:
        self._note("stat", key)
        return super()._stat(key)

    def _delete(self, key: str) -> None:
        self._note("delete", key)
        super()._delete(key)

    def _delete_many(self, keys: Iterator[str]) -> None:
        listed = list(keys)
        for key in listed:
            self._note("delete", key)
        super()._delete_many(iter(listed))

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        self._note("list", prefix)
        return super()._list(prefix, start_after, recursive)

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        self._note("list", prefix)
        return super()._list_keys(prefix, start_after, recursive)
