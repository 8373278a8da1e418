"""A store seen through a key prefix: a folder of a posix root, a prefix inside a bucket."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import attrs

from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .errors import InvalidArgumentError, InvalidKeyError, ObjstoreError
from .info import CleanupResult, CommonPrefix, ObjectInfo
from .keys import MAX_KEY_BYTES
from .storage import Chunks, Storage


def normalise_prefix(prefix: object, check_key: Callable[[object], str]) -> str:
    """``prefix`` ending with "/", if it names a folder of keys that ``check_key`` accepts.

    Raises :class:`InvalidArgumentError` naming the prefix otherwise: an empty prefix, or
    one with an empty, "." or ".." segment, is never valid.
    """
    if not isinstance(prefix, str):
        raise InvalidArgumentError(f"a key prefix is a str, not {type(prefix).__name__}")
    folder = prefix[:-1] if prefix.endswith("/") else prefix
    if not folder:
        raise InvalidArgumentError(f"a key prefix names a folder of keys, not {prefix!r}")
    if any(segment in ("", ".", "..") for segment in folder.split("/")):
        raise InvalidArgumentError(f'key prefix {prefix!r} has an empty, "." or ".." segment')
    try:
        check_key(folder)
    except InvalidKeyError as exc:
        raise InvalidArgumentError(f"key prefix {prefix!r} breaks a key rule: {exc.rule}") from exc
    if len(folder.encode("utf-8")) + 2 > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"key prefix {prefix!r} leaves no room for a key of {MAX_KEY_BYTES} bytes")
    return folder + "/"


class PrefixedStorage(Storage):
    """The objects of ``storage`` under ``prefix``, with keys relative to it.

    Nothing outside the prefix can be read, listed or deleted through it. Keys follow the
    rules of ``storage``, alone and with the prefix. Errors raised by a call name the
    relative key, except those raised while a stream from :meth:`read` is read.
    ``cleanup`` and ``close`` act on ``storage`` as a whole.
    """

    def __init__(self, storage: Storage, prefix: str) -> None:
        """Wrap ``storage``; ``prefix`` ("a/b" or "a/b/") is refused with ``InvalidArgumentError``
        unless it is a folder of keys that ``storage`` accepts."""
        if not isinstance(storage, Storage):
            raise InvalidArgumentError(f"storage is a Storage, not {type(storage).__name__}")
        self._storage = storage
        self._prefix = normalise_prefix(prefix, storage.check_key)
        self.supports_conditional_writes = storage.supports_conditional_writes
        self.supports_metadata = storage.supports_metadata
        self.lists_metadata = storage.lists_metadata

    @property
    def storage(self) -> Storage:
        """The wrapped store."""
        return self._storage

    @property
    def prefix(self) -> str:
        """The prefix of every key in the wrapped store, ending with "/"."""
        return self._prefix

    def __repr__(self) -> str:
        return f"PrefixedStorage({self._storage!r}, {self._prefix!r})"

    def check_key(self, key: object) -> str:
        key = self._storage.check_key(key)
        try:
            self._storage.check_key(self._prefix + key)
        except InvalidKeyError as exc:
            raise InvalidKeyError(key, f"{exc.rule} (with the prefix {self._prefix!r})") from exc
        return key

    @contextlib.contextmanager
    def _relative_errors(self) -> Iterator[None]:
        """Raise the wrapped store's errors with the keys relative to the prefix."""
        try:
            yield
        except ObjstoreError as exc:
            relative = self._relative_error(exc)
            if relative is None:
                raise
            raise relative from exc

    def _relative_error(self, exc: ObjstoreError) -> ObjstoreError | None:
        """A copy of ``exc`` that names the relative key, or None if it names no key inside."""
        key = getattr(exc, "key", None)
        if not isinstance(key, str) or not key.startswith(self._prefix):
            return None
        relative = key[len(self._prefix) :]
        error = type(exc).__new__(type(exc))  # not __init__: the subclasses take other arguments
        error.__dict__.update(exc.__dict__)
        setattr(error, "key", relative)  # noqa: B010 - not every error class declares it
        error.args = tuple(
            arg.replace(repr(key), repr(relative)) if isinstance(arg, str) else arg for arg in exc.args
        )
        return error

    # -- writing and reading -------------------------------------------------------

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
        with self._relative_errors():
            return self._storage._write(
                self._prefix + key,
                chunks,
                persist=persist,
                if_none_match=if_none_match,
                if_match=if_match,
                attributes=attributes,
            )

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        with self._relative_errors():
            return self._storage._read(self._prefix + key, start, end)

    def _read_version(self, key: str, start: int, end: int | None, etag: str) -> BinaryIO:
        with self._relative_errors():
            return self._storage._read_version(self._prefix + key, start, end, etag)

    def _read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        with self._relative_errors():
            return self._storage._read_ranges(self._prefix + key, ranges)

    def read_bytes(self, key: str) -> bytes:
        key = self.check_key(key)
        with self._relative_errors():
            return self._storage.read_bytes(self._prefix + key)

    def _download(self, key: str, fd: int) -> ObjectInfo:
        with self._relative_errors():
            return attrs.evolve(self._storage._download(self._prefix + key, fd), key=key)

    def _stat(self, key: str) -> ObjectInfo:
        with self._relative_errors():
            return attrs.evolve(self._storage._stat(self._prefix + key), key=key)

    # -- deleting and copying ----------------------------------------------------

    def _delete(self, key: str) -> None:
        with self._relative_errors():
            self._storage._delete(self._prefix + key)

    def _delete_many(self, keys: Iterator[str]) -> None:
        with self._relative_errors():
            self._storage._delete_many(self._prefix + key for key in keys)

    def _copy(self, src: str, dst: str) -> str:
        with self._relative_errors():
            return self._storage._copy(self._prefix + src, self._prefix + dst)

    # -- listing ---------------------------------------------------------------

    def _inner_range(self, prefix: str, start_after: str) -> tuple[str, str] | None:
        """The listing arguments of the wrapped store, or None if no key can match."""
        inner_prefix = self._prefix + prefix
        if len(inner_prefix.encode("utf-8")) > MAX_KEY_BYTES:
            return None  # longer than any key of the wrapped store
        return inner_prefix, self._prefix + start_after if start_after else ""

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        inner = self._inner_range(prefix, start_after)
        if inner is None:
            return
        cut = len(self._prefix)
        with self._relative_errors():
            for entry in self._storage._list(*inner, recursive):
                yield attrs.evolve(entry, key=entry.key[cut:])

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        inner = self._inner_range(prefix, start_after)
        if inner is None:
            return
        cut = len(self._prefix)
        with self._relative_errors():
            for entry in self._storage._list_keys(*inner, recursive):
                yield entry[cut:] if isinstance(entry, str) else CommonPrefix(entry.key[cut:])

    # -- the wrapped store as a whole ---------------------------------------------------

    def cleanup(self, older_than: float | None = None) -> CleanupResult:
        """Clean up the wrapped store as a whole (its own default ``older_than`` if None)."""
        if older_than is None:
            return self._storage.cleanup()
        return self._storage.cleanup(older_than)

    def close(self) -> None:
        """Close the wrapped store."""
        self._storage.close()
