"""The storage interface every backend implements."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO, Literal, overload

from ._download import copy_version, download_to, target_path
from ._ranges import check_range
from ._source import Data, iter_chunks
from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .errors import InvalidArgumentError, NotExistError, ObjectChangedError, UnsupportedError
from .info import CleanupResult, CommonPrefix, ObjectInfo
from .keys import check_key, check_prefix

Chunks = Iterator["bytes | memoryview"]


class Storage(abc.ABC):
    """A flat map from keys to immutable byte objects.

    Public methods validate their arguments, then call the ``_``-prefixed methods that a
    backend implements; a backend never sees an invalid key.
    """

    #: Whether the backend honours ``if_none_match`` and ``if_match`` atomically.
    supports_conditional_writes: bool = True
    #: Whether the backend stores a content type and user metadata with each object.
    supports_metadata: bool = True
    #: Whether ``list()`` infos carry them too (else their ``content_type`` and
    #: ``metadata`` are None, and ``stat()`` tells them).
    lists_metadata: bool = True

    def check_key(self, key: object) -> str:
        """Return ``key`` if this backend can store it, else raise ``InvalidKeyError``."""
        return check_key(key)

    # -- writing ---------------------------------------------------------------

    def write(
        self,
        key: str,
        data: Data,
        *,
        size: int | None = None,
        persist: bool = False,
        if_none_match: bool = False,
        if_match: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store ``data`` under ``key`` atomically and return the new etag.

        ``size=None`` reads ``data`` to its end; ``size=N`` stores exactly its first N
        bytes and fails, storing nothing, if it has fewer. ``persist`` returns only once
        the object is durable. ``if_none_match`` only creates; ``if_match`` only replaces
        the object whose etag it gives. ``content_type`` (default
        "application/octet-stream") and ``metadata`` are stored with the bytes, in the
        same atomic step (rules: :mod:`objstore.attributes`); a backend that cannot keep
        them raises ``UnsupportedError``.
        """
        key = self.check_key(key)
        if if_none_match and if_match is not None:
            raise InvalidArgumentError("if_none_match and if_match exclude each other")
        if if_match is not None and (not isinstance(if_match, str) or not if_match):
            raise InvalidArgumentError(f"if_match is a non-empty etag, not {if_match!r}")
        attributes = Attributes.checked(content_type, metadata)
        if not (self.supports_metadata or attributes.is_default):
            raise UnsupportedError(f"{self!r} cannot store a content type or metadata (supports_metadata)")
        return self._write(
            key,
            iter_chunks(key, data, size),
            persist=persist,
            if_none_match=bool(if_none_match),
            if_match=if_match,
            attributes=attributes,
        )

    @abc.abstractmethod
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
        """Store the chunks and ``attributes`` under ``key`` atomically; return the etag."""

    # -- reading ---------------------------------------------------------------

    def read(
        self, key: str, *, start: int = 0, end: int | None = None, if_match: str | None = None
    ) -> BinaryIO:
        """Open the bytes ``[start, end)`` of the object (all of it by default): a seekable
        binary stream, to be used as a context manager, whose position 0 is ``start``.

        Offsets follow Python's slice rules, cut to the object (``end=None`` is its end,
        ``start >= end`` is empty), except that negative ones are refused with
        ``InvalidArgumentError``. ``if_match`` opens only the version whose etag it gives:
        ``ObjectChangedError`` if the object is another one now.
        """
        key = self.check_key(key)
        first, last = check_range(start, end)
        if if_match is None:
            return self._read(key, first, last)
        if not isinstance(if_match, str) or not if_match:
            raise InvalidArgumentError(f"if_match is a non-empty etag, not {if_match!r}")
        return self._read_version(key, first, last, if_match)

    @abc.abstractmethod
    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        """Open a seekable stream of the bytes ``[start, end)``, cut to the object
        (``0 <= start``, ``end`` None or ``>= start``); ``NotExistError`` if it is missing."""

    def _read_version(self, key: str, start: int, end: int | None, etag: str) -> BinaryIO:
        """Open the range of the version ``etag`` (else ``ObjectChangedError``).

        The default compares the etag before and after opening (a version's etag is never
        another's); a backend overrides it to check the version it opens, in one step.
        """
        if self._stat(key).etag != etag:
            raise ObjectChangedError(key, etag)
        stream = self._read(key, start, end)
        try:
            if self._stat(key).etag != etag:
                raise ObjectChangedError(key, etag)
        except BaseException:
            stream.close()
            raise
        return stream

    def read_bytes(self, key: str) -> bytes:
        """Return the whole object."""
        with self.read(key) as stream:
            return stream.read()

    def read_range(self, key: str, start: int, end: int, *, if_match: str | None = None) -> bytes:
        """Return the bytes ``[start, end)`` of the object, by the rules of :meth:`read`."""
        if if_match is None:
            return self.read_ranges(key, [(start, end)])[0]
        if end is None:
            raise InvalidArgumentError("read_range needs an end; read() reads to the end")
        with self.read(key, start=start, end=end, if_match=if_match) as stream:
            return stream.read()

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the bytes of each ``(start, end)`` of ``ranges``, in order, all of one version
        of the object, by the rules of :meth:`read`. No ranges read nothing: ``[]``."""
        key = self.check_key(key)
        checked: list[tuple[int, int]] = []
        for item in ranges:
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidArgumentError(f"a range is a (start, end) tuple, not {item!r}")
            start, end = check_range(*item)
            if end is None:
                raise InvalidArgumentError("end is an int, not None")
            checked.append((start, end))
        return self._read_ranges(key, checked) if checked else []

    def _read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each range (checked, ``start <= end``), from one stream of the span."""
        low, high = min(start for start, _ in ranges), max(end for _, end in ranges)
        with self._read(key, low, high) as stream:
            parts = []
            for start, end in ranges:
                stream.seek(start - low)
                parts.append(stream.read(end - start))
            return parts

    def stat(self, key: str) -> ObjectInfo:
        """Describe the object; raise ``NotExistError`` if it is missing."""
        return self._stat(self.check_key(key))

    @abc.abstractmethod
    def _stat(self, key: str) -> ObjectInfo:
        """Describe the object; raise ``NotExistError`` if it is missing."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self.stat(key)
        except NotExistError:
            return False
        return True

    def download(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Write the object to the local file ``path`` atomically; the info of the version written.

        The bytes go to a new temporary file in ``path``'s folder, renamed to ``path`` once
        complete: a failure leaves no file behind and ``path`` as it was. An object
        replaced while it is read raises ``ObjectChangedError``; a local failure is a
        ``StorageIOError``.
        """
        key = self.check_key(key)
        target = target_path(path)
        return download_to(target, lambda fd: self._download(key, fd))

    def _download(self, key: str, fd: int) -> ObjectInfo:
        """Write the whole object to the empty file ``fd`` (from offset 0, ``os.pwrite``);
        the info of the version written."""
        return copy_version(key, lambda: self._stat(key), lambda: self._read(key, 0, None), fd)

    # -- deleting and copying ----------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete the object; a missing object is not an error."""
        self._delete(self.check_key(key))

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Delete the object if it exists."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete every object of ``keys``; missing ones are not an error."""
        self._delete_many(self.check_key(key) for key in keys)

    def _delete_many(self, keys: Iterator[str]) -> None:
        for key in keys:
            self._delete(key)

    def copy(self, src: str, dst: str) -> str:
        """Copy object ``src`` to ``dst`` (replacing it) and return the new etag.

        The copy has the content type and metadata of ``src``. A copy to itself changes
        nothing and returns the object's current etag; ``NotExistError`` if it is missing.
        """
        src, dst = self.check_key(src), self.check_key(dst)
        if src == dst:
            return self._stat(src).etag  # S3 refuses such a copy, and no backend needs one
        return self._copy(src, dst)

    def _copy(self, src: str, dst: str) -> str:
        """Copy by reading and writing; a backend overrides it to copy one version atomically."""
        info = self._stat(src)
        attributes = Attributes(info.content_type or DEFAULT_ATTRIBUTES.content_type, info.metadata)
        with self._read(src, 0, None) as stream:
            return self._write(
                dst,
                iter_chunks(dst, stream, None),
                persist=False,
                if_none_match=False,
                if_match=None,
                attributes=attributes,
            )

    # -- listing ---------------------------------------------------------------

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo | CommonPrefix]:
        """Yield the objects whose key starts with ``prefix``, in byte-wise key order.

        Only keys greater than ``start_after`` are yielded. With ``recursive=False``,
        keys with a "/" after the prefix are folded into one :class:`CommonPrefix` per
        level, merged into the same order.
        """
        prefix = check_prefix(prefix)
        start_after = check_prefix(start_after, "start_after")
        return self._list(prefix, start_after, bool(recursive))

    @abc.abstractmethod
    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        """Yield what ``list`` promises, streaming."""

    @overload
    def list_keys(
        self, prefix: str = "", *, start_after: str = "", recursive: Literal[True] = True
    ) -> Iterator[str]: ...

    @overload
    def list_keys(
        self, prefix: str = "", *, start_after: str = "", recursive: bool
    ) -> Iterator[str | CommonPrefix]: ...

    def list_keys(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[str | CommonPrefix]:
        """Like :meth:`list`, but yield each object's key instead of its info.

        Cheaper where describing an object costs extra work (one ``stat`` per file on
        posix); the same keys, in the same order, as ``list``.
        """
        prefix = check_prefix(prefix)
        start_after = check_prefix(start_after, "start_after")
        return self._list_keys(prefix, start_after, bool(recursive))

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        for entry in self._list(prefix, start_after, recursive):
            yield entry.key if isinstance(entry, ObjectInfo) else entry

    def cleanup(self, older_than: float = 3600.0) -> CleanupResult:
        """Remove what crashed or interrupted writers left behind, once older than
        ``older_than`` seconds; what went. Objects are never touched."""
        return CleanupResult()

    def close(self) -> None:  # noqa: B027 - most backends hold nothing
        """Release what the backend holds open (connections, file descriptors)."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
