"""An fsspec filesystem over any objstore ``Storage``, registered as the protocol ``objstore``.

``fsspec.filesystem("objstore", storage=storage)``: a path is a key. The store is flat,
so a directory is a prefix ending at a "/" below which keys lie: it exists while they
do, ``mkdir`` does nothing, and a key with an empty segment (``a//b``, ``a/``, ``/a``)
cannot be named by a path and is not shown. docs/fsspec.md lists the differences from a
local filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any, BinaryIO

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractFileSystem
from fsspec.utils import isfilelike

from ._fsspec_file import ObjstoreFile, file_info
from .errors import InvalidArgumentError, InvalidKeyError, NotExistError
from .info import CommonPrefix, ObjectInfo
from .storage import Storage

#: The keyword with which ``glob`` hands ``find`` the literal start of its pattern.
_LIST_PREFIX = "_objstore_list_prefix"
_CHUNK = 1 << 20


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _below(path: str) -> str:
    """The prefix of the keys inside the directory ``path`` ("" for the root)."""
    return path + "/" if path else ""


def _literal_start(pattern: str) -> str | None:
    """The part of a glob pattern before its first wildcard, or None without one."""
    found = [index for index in map(pattern.find, "*?[") if index >= 0]
    return pattern[: min(found)] if found else None


def _create(mode: str) -> bool:
    if mode not in ("overwrite", "create"):
        raise InvalidArgumentError(f"mode is 'overwrite' or 'create', not {mode!r}")
    return mode == "create"


def _copy_stream(source: BinaryIO, target: Any, callback: Callback) -> None:
    while chunk := source.read(_CHUNK):
        target.write(chunk)
        callback.relative_update(len(chunk))


def _progress(source: BinaryIO, callback: Callback) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        callback.relative_update(len(chunk))
        yield chunk


class ObjstoreFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec has no types
    """fsspec's view of an objstore ``Storage``: paths are keys, directories are prefixes.

    It pickles as fsspec filesystems do, by its constructor's arguments: the store
    pickles itself, and the other side opens its own connections.
    """

    protocol = "objstore"
    root_marker = ""
    cachable = False  # the store is the identity: never hand out another caller's instance

    def __init__(self, storage: Storage, **options: Any) -> None:
        if not isinstance(storage, Storage):
            raise InvalidArgumentError(f"storage is an objstore Storage, not {type(storage).__name__}")
        super().__init__(**options)
        self.storage = storage

    def __repr__(self) -> str:
        return f"ObjstoreFileSystem({self.storage!r})"

    # -- looking up ------------------------------------------------------------

    def _object(self, path: str) -> ObjectInfo | None:
        """The object stored under ``path``, if any (a path no key can match has none)."""
        try:
            return self.storage.stat(path)
        except (NotExistError, InvalidKeyError):
            return None

    def _level(self, path: str) -> Iterator[dict[str, Any]]:
        """The files and directories right inside the directory ``path``, in key order."""
        prefix = _below(path)
        for entry in self.storage.list(prefix, recursive=False):
            name = entry.key[len(prefix) :]
            if isinstance(entry, CommonPrefix):
                if name != "/":
                    yield _directory(entry.key[:-1])
            elif name:
                yield file_info(entry)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of the directory ``path``, or the file ``path`` itself."""
        path = self._strip_protocol(path)
        entries = list(self._level(path))
        if not entries and path:
            info = self._object(path)
            if info is None:
                raise NotExistError(path)
            entries = [file_info(info)]
        return entries if detail else [entry["name"] for entry in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """The file ``path`` if an object is stored there, else the directory if keys lie below."""
        path = self._strip_protocol(path)
        if not path:
            return _directory("")
        info = self._object(path)
        if info is not None:
            return file_info(info)
        if self.isdir(path):
            return _directory(path)
        raise NotExistError(path)

    def isdir(self, path: str) -> bool:
        """Whether keys lie below ``path`` (a path may be a file and a directory at once)."""
        path = self._strip_protocol(path)
        return not path or next(self._level(path), None) is not None

    def isfile(self, path: str) -> bool:
        return self._object(self._strip_protocol(path)) is not None

    def modified(self, path: str) -> datetime:
        return self.storage.stat(self._strip_protocol(path)).last_modified

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Everything below ``path``, from one listing of its prefix (one level if ``maxdepth=1``)."""
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        path = self._strip_protocol(path)
        prefix = _below(path)
        start = kwargs.get(_LIST_PREFIX, prefix)
        narrowed = start != prefix and start.startswith(prefix)
        found: dict[str, dict[str, Any]] = {}
        for entry in self.storage.list(start if narrowed else prefix, recursive=maxdepth != 1):
            if isinstance(entry, CommonPrefix):  # one level only
                if withdirs and entry.key[len(prefix) :] != "/":
                    found[entry.key[:-1]] = _directory(entry.key[:-1])
                continue
            parts = entry.key[len(prefix) :].split("/")
            if "" in parts:
                continue
            if withdirs:  # a name that is a file and a directory shows as the directory, as in walk()
                for depth in range(1, min(len(parts) - 1, maxdepth or len(parts)) + 1):
                    name = prefix + "/".join(parts[:depth])
                    found[name] = _directory(name)
            if maxdepth is None or len(parts) <= maxdepth:
                found[entry.key] = file_info(entry)
        if path and not narrowed and (withdirs or not found):  # the path itself, as info() has it
            info = self._object(path)
            if info is not None:
                found[path] = file_info(info)
            elif found:
                found[path] = _directory(path)
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        """fsspec's glob, listing only the keys that start like the pattern."""
        start = _literal_start(self._strip_protocol(path))
        if start is not None:
            kwargs[_LIST_PREFIX] = start
        return super().glob(path, maxdepth=maxdepth, **kwargs)

    # -- reading and writing ---------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ObjstoreFile:
        return ObjstoreFile(
            self,
            path,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )

    def _offsets(self, key: str, start: int | None, end: int | None) -> tuple[int, int | None]:
        """fsspec's offsets (None, or negative from the end) as objstore's: a stat only for negatives."""
        start = start or 0
        if start < 0 or (end is not None and end < 0):
            size = self.storage.stat(key).size
            start = max(0, size + start) if start < 0 else start
            end = max(0, size + end) if end is not None and end < 0 else end
        return start, end

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """The bytes ``[start, end)`` of the file, by one ranged read (fsspec's offsets)."""
        key = self._strip_protocol(path)
        if not start and end is None:
            return self.storage.read_bytes(key)
        first, last = self._offsets(key, start, end)
        if last is None:
            with self.storage.read(key, start=first) as stream:
                return stream.read()
        return self.storage.read_range(key, first, last)

    def cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int | None] | None,
        ends: int | list[int | None] | None,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[bytes | Exception]:
        """The ranges, by one ``Storage.read_ranges`` per file (S3 merges near ranges and
        fetches concurrently); ``max_gap`` is the backend's to decide and is ignored."""
        if not isinstance(paths, list):
            raise TypeError("paths is a list")
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        if len(starts) != len(paths) or len(ends) != len(paths):
            raise ValueError("paths, starts and ends differ in length")
        wanted: dict[str, list[int]] = {}
        for index, path in enumerate(paths):
            wanted.setdefault(self._strip_protocol(path), []).append(index)
        out: list[bytes | Exception] = [b""] * len(paths)
        for key, indices in wanted.items():
            try:
                ranges = []
                for index in indices:
                    first, last = self._offsets(key, starts[index], ends[index])
                    if last is None:
                        last = self.storage.stat(key).size
                    ranges.append((first, last))
                for index, data in zip(indices, self.storage.read_ranges(key, ranges), strict=True):
                    out[index] = data
            except Exception as exc:
                if on_error != "return":
                    raise
                for index in indices:
                    out[index] = exc
        return out

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Store ``value``; ``mode="create"`` is a create-only write (``FileExistsError`` if taken)."""
        self.storage.write(self._strip_protocol(path), value, if_none_match=_create(mode))

    def put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        if os.path.isdir(lpath):
            return  # a directory exists through the keys below it
        key = self._strip_protocol(rpath)
        with open(lpath, "rb") as source:
            callback.set_size(os.fstat(source.fileno()).st_size)
            self.storage.write(key, _progress(source, callback), if_none_match=_create(mode))

    def get_file(
        self,
        rpath: str,
        lpath: Any = None,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: Any = None,
        **kwargs: Any,
    ) -> None:
        key = self._strip_protocol(rpath)
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        try:
            stream = self.storage.read(key)
        except NotExistError:
            if outfile is None and self.isdir(key):
                os.makedirs(lpath, exist_ok=True)
                return
            raise
        with stream:
            if outfile is not None:
                _copy_stream(stream, outfile, callback)
                return
            os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
            with open(lpath, "wb") as target:
                _copy_stream(stream, target, callback)

    # -- copying and deleting --------------------------------------------------

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        source = self._strip_protocol(path1)
        try:
            self.storage.copy(source, self._strip_protocol(path2))
        except NotExistError:
            if not self.isdir(source):
                raise  # a directory needs no copy: it exists through its keys

    def rm_file(self, path: str) -> None:
        self.storage.delete(self._strip_protocol(path))

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete the files that ``path`` names or (``recursive``) holds, in batches."""
        names = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        self.storage.delete_many(name for name in names if name)
