"""A store that refuses every change once its owner may have lost the lease."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

from objstore import Storage
from objstore.attributes import DEFAULT_ATTRIBUTES, Attributes
from objstore.info import CleanupResult, CommonPrefix, ObjectInfo
from objstore.storage import Chunks


class FencedStorage(Storage):
    """``storage``, where every write, delete and copy first calls ``check``.

    ``check`` raises (the runservice's ``LeaseLostError``) unless the lease holds long
    enough for the request to land: a runservice that lost its lease changes nothing.
    Reads and listings pass through.
    """

    def __init__(self, storage: Storage, check: Callable[[], None]) -> None:
        self._storage = storage
        self._check = check
        self.supports_conditional_writes = storage.supports_conditional_writes
        self.supports_metadata = storage.supports_metadata
        self.lists_metadata = storage.lists_metadata

    def __repr__(self) -> str:
        return f"FencedStorage({self._storage!r})"

    @property
    def storage(self) -> Storage:
        """The wrapped store."""
        return self._storage

    def check_key(self, key: object) -> str:
        return self._storage.check_key(key)

    def _write(
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> str:
        self._check()
        return self._storage._write(
            key,
            chunks,
            persist=persist,
            if_none_match=if_none_match,
            if_match=if_match,
            attributes=attributes,
        )

    def _delete(self, key: str) -> None:
        self._check()
        self._storage._delete(key)

    def _delete_many(self, keys: Iterator[str]) -> None:
        self._check()
        self._storage._delete_many(keys)

    def _copy(self, src: str, dst: str) -> str:
        self._check()
        return self._storage._copy(src, dst)

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        return self._storage._read(key, start, end)

    def _read_version(self, key: str, start: int, end: int | None, etag: str) -> BinaryIO:
        return self._storage._read_version(key, start, end, etag)

    def _read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        return self._storage._read_ranges(key, ranges)

    def read_bytes(self, key: str) -> bytes:
        return self._storage.read_bytes(key)

    def _download(self, key: str, fd: int) -> ObjectInfo:
        return self._storage._download(key, fd)

    def _stat(self, key: str) -> ObjectInfo:
        return self._storage._stat(key)

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        return self._storage._list(prefix, start_after, recursive)

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        return self._storage._list_keys(prefix, start_after, recursive)

    def cleanup(self, older_than: float = 3600.0) -> CleanupResult:
        return self._storage.cleanup(older_than)

    def close(self) -> None:
        self._storage.close()
