"""An fsspec filesystem over any objstore ``Storage``, registered as the protocol ``objstore``.

``fsspec.filesystem("objstore", storage=storage)``, or ``fsspec.filesystem("objstore",
store_url="s3://bucket/prefix", **options)`` with the options of ``objstore.from_url``
(what pandas and dask pass as ``storage_options``): a path is a key. The store is flat,
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

from fsspec.caching import caches
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractFileSystem
from fsspec.utils import isfilelike

from ._fsspec_file import DEFAULT_CACHE_TYPE, ObjstoreFile, file_info
from .config import from_url
from .errors import InvalidArgumentError, InvalidKeyError, NotExistError
from .info import CommonPrefix, ObjectInfo
from .storage import Storage

#: The keyword with which ``glob`` hands ``find`` the literal start of its pattern.
_LIST_PREFIX = "_objstore_list_prefix"
_CHUNK = 1 << 20
#: The options of ``AbstractFileSystem`` itself: kept from the store's options (and unused).
_FSSPEC_OPTIONS = frozenset({"use_listings_cache", "listings_expiry_time", "max_paths"})


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


def _store(storage: object, store_url: str | None, options: dict[str, Any]) -> Storage:
    """The store of the filesystem: ``storage``, or the one ``from_url`` builds."""
    if storage is not None and store_url is not None:
        raise InvalidArgumentError("give storage (a Storage) or store_url (a URL), not both")
    if store_url is not None:
        return from_url(store_url, **options)  # which checks them all, naming what is wrong
    if storage is None:
        raise InvalidArgumentError(
            "give storage (an objstore Storage) or store_url (s3://bucket[/prefix], file:///path "
            "or memory://, with the options of objstore.from_url)"
        )
    if not isinstance(storage, Storage):
        hint = " (a URL goes in store_url)" if isinstance(storage, str) else ""
        raise InvalidArgumentError(f"storage is an objstore Storage, not {type(storage).__name__}{hint}")
    if options:
        raise InvalidArgumentError(
            f"option(s) {', '.join(sorted(options))} are store options, which go with store_url: "
            "storage is a store already"
        )
    return storage


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

    The store is ``storage``, or the one that ``objstore.from_url(store_url, **options)``
    builds (S3 settings not given come from the AWS environment); exactly one of the two.
    ``block_size``, ``cache_type`` and ``cache_options`` are the defaults of the files it
    opens (``open`` may override them; a written file hands its data to the upload in
    chunks of ``block_size``); fsspec's ``use_listings_cache``,
    ``listings_expiry_time`` and ``max_paths`` are accepted and unused. It pickles as
    fsspec filesystems do, by its constructor's arguments: the store pickles itself (or is
    built again from ``store_url``), and the other side opens its own connections.
    """

    protocol = "objstore"
    root_marker = ""
    cachable = False  # the store is the identity: never hand out another caller's instance

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        store_url: str | None = None,
        block_size: int | None = None,
        cache_type: str = DEFAULT_CACHE_TYPE,
        cache_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        fsspec_options = {name: value for name, value in options.items() if name in _FSSPEC_OPTIONS}
        store_options = {name: value for name, value in options.items() if name not in _FSSPEC_OPTIONS}
        if block_size is not None and (
            not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1
        ):
            raise InvalidArgumentError(f"block_size is a number of bytes, 1 or more, not {block_size!r}")
        if cache_type not in caches:
            raise InvalidArgumentError(
                f"cache_type is one of fsspec's caches ({', '.join(sorted(filter(None, caches)))}), "
                f"not {cache_type!r}"
            )
        if cache_options is not None and not isinstance(cache_options, dict):
            raise InvalidArgumentError(f"cache_options is a dict, not {type(cache_options).__name__}")
        self.storage = _store(storage, store_url, store_options)
        super().__init__(**fsspec_options)
        self.block_size = block_size
        self.cache_type = cache_type
        self.cache_options = cache_options

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
        if "cache_type" not in kwargs:  # the filesystem's cache, with its options unless given
            kwargs["cache_type"] = self.cache_type
            cache_options = self.cache_options if cache_options is None else cache_options
        return ObjstoreFile(
            self,
            path,
            mode,
            block_size=self.block_size if block_size is None else block_size,
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
        """Copy the file ``rpath`` to the local path ``lpath`` atomically (``Storage.download``:
        parallel ranged reads on S3), or into the open file ``outfile``."""
        key = self._strip_protocol(rpath)
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        if outfile is not None:
            with self.storage.read(key) as stream:
                _copy_stream(stream, outfile, callback)
            return
        os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
        try:
            info = self.storage.download(key, lpath)
        except NotExistError:
            if self.isdir(key):
                os.makedirs(lpath, exist_ok=True)
                return
            raise
        callback.set_size(info.size)
        callback.relative_update(info.size)

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
