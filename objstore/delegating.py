"""A store that passes every call to another, with one hook before each request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Literal, TypeVar

from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .info import CleanupResult, CommonPrefix, ObjectInfo
from .storage import Chunks, Storage

Request = Literal["write", "read", "stat", "delete", "copy", "list"]
"""What a call asks of the wrapped store; a listing asks once per :data:`LIST_PAGE` entries."""
LIST_PAGE = 1000
"""The entries one listing request returns (S3's page)."""
T = TypeVar("T")


class DelegatingStorage(Storage):
    """``storage`` itself, where :meth:`_request` is called before each request to it.

    A subclass overrides :meth:`_request` to refuse, count or delay requests.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.supports_conditional_writes = storage.supports_conditional_writes
        self.supports_metadata = storage.supports_metadata
        self.lists_metadata = storage.lists_metadata

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._storage!r})"

    @property
    def storage(self) -> Storage:
        """The wrapped store."""
        return self._storage

    def _request(self, request: Request) -> None:
        """Called before each request; the default does nothing."""

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
        self._request("write")
        return self._storage._write(
            key,
            chunks,
            persist=persist,
            if_none_match=if_none_match,
            if_match=if_match,
            attributes=attributes,
        )

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        self._request("read")
        return self._storage._read(key, start, end)

    def _read_version(self, key: str, start: int, end: int | None, etag: str) -> BinaryIO:
        self._request("read")
        return self._storage._read_version(key, start, end, etag)

    def _read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        self._request("read")
        return self._storage._read_ranges(key, ranges)

    def _download(self, key: str, fd: int) -> ObjectInfo:
        self._request("read")
        return self._storage._download(key, fd)

    def _stat(self, key: str) -> ObjectInfo:
        self._request("stat")
        return self._storage._stat(key)

    def _delete(self, key: str) -> None:
        self._request("delete")
        self._storage._delete(key)

    def _delete_many(self, keys: Iterator[str]) -> None:
        self._request("delete")
        self._storage._delete_many(keys)

    def _copy(self, src: str, dst: str) -> str:
        self._request("copy")
        return self._storage._copy(src, dst)

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        return self._pages(self._storage._list(prefix, start_after, recursive))

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        return self._pages(self._storage._list_keys(prefix, start_after, recursive))

    def _pages(self, entries: Iterator[T]) -> Iterator[T]:
        self._request("list")
        for count, entry in enumerate(entries, 1):
            yield entry
            if count % LIST_PAGE == 0:
                self._request("list")

    def cleanup(self, older_than: float = 3600.0) -> CleanupResult:
        return self._storage.cleanup(older_than)

    def close(self) -> None:
        self._storage.close()
