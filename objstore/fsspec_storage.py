"""Any fsspec filesystem as an objstore backend: key ``a/b`` is the file ``<root>/a/b``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from ._listing import ListCursor, fold_levels
from ._ranges import RangeReader, clamp
from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .errors import (
    InvalidKeyError,
    KeyConflictError,
    NotExistError,
    ObjstoreError,
    PermissionDeniedError,
    StorageIOError,
    UnsupportedError,
)
from .info import CommonPrefix, ObjectInfo
from .keys import check_posix_key
from .storage import Chunks, Storage

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

#: Data kept in memory while a write is spooled; more goes to a temporary file.
SPOOL_BYTES = 8 << 20
_CHUNK = 1 << 20
_ETAG_FIELDS = ("ETag", "etag")
_TIME_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_VERSION_FIELDS = ("size", *_TIME_FIELDS, "ino")
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)


@contextlib.contextmanager
def _fs_errors(key: str) -> Iterator[None]:
    """Turn the filesystem's OS errors into objstore's."""
    try:
        yield
    except ObjstoreError:
        raise
    except PermissionError as exc:
        raise PermissionDeniedError(f"permission denied for {key!r}: {exc}") from exc
    except OSError as exc:
        raise StorageIOError(exc.errno, f"{exc.strerror or exc} (for {key!r})") from exc


def _plain(value: Any) -> Any:
    return value.timestamp() if isinstance(value, datetime) else value


def _etag(info: dict[str, Any]) -> str:
    """The filesystem's etag if it has one, else a digest of the file's size, times and inode."""
    for field in _ETAG_FIELDS:
        if info.get(field):
            return str(info[field]).strip('"')
    version = repr([_plain(info.get(field)) for field in _VERSION_FIELDS]).encode()
    return hashlib.blake2b(version, digest_size=12).hexdigest()


def _modified(info: dict[str, Any]) -> datetime:
    """The file's last change in UTC, from the first time field the filesystem gives."""
    for field in _TIME_FIELDS:
        value = info.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return _modified({field: datetime.fromisoformat(value.replace("Z", "+00:00"))})
    return datetime.fromtimestamp(0, UTC)


class FsspecStorage(Storage):
    """Objects as the files of an fsspec filesystem under ``root`` (memory and local are tested).

    Keys follow the posix rules and are paths, so ``a`` and ``a/b`` cannot both exist: the
    second write raises ``KeyConflictError`` and changes nothing. A filesystem has no
    atomic create-only or compare-and-swap write, so ``supports_conditional_writes`` is
    False and such writes are refused with ``UnsupportedError``; so are a content type
    and metadata (``supports_metadata`` is False: infos carry None for them). A write is spooled
    first (a failing source stores nothing), then written with ``autocommit=False``: as
    atomic as the filesystem's commit (a rename on a local disk). ``persist`` adds
    nothing to what the filesystem does. Not safe for concurrent writers of one tree.

    A store pickles as its filesystem (which fsspec pickles by its constructor's
    arguments) and its root.
    """

    supports_conditional_writes = False
    supports_metadata = False
    lists_metadata = False

    def __init__(self, fs: AbstractFileSystem, root: str) -> None:
        self.fs = fs
        stripped = str(fs._strip_protocol(root)).rstrip("/")
        self._base = stripped + "/" if stripped else str(fs.root_marker)
        self._root = self._base.removesuffix("/")
        with _fs_errors(root):
            if self._root:
                fs.makedirs(self._root, exist_ok=True)

    def __repr__(self) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"FsspecStorage({protocol}, {self._root!r})"

    def __getstate__(self) -> dict[str, Any]:
        """The filesystem and the root (made already: not made again on the other side)."""
        return {"fs": self.fs, "base": self._base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fs = state["fs"]
        self._base = state["base"]
        self._root = self._base.removesuffix("/")

    def check_key(self, key: object) -> str:
        return check_posix_key(key)

    def _path(self, key: str) -> str:
        return self._base + key

    def _object(self, key: str, info: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(key, int(info["size"]), _modified(info), _etag(info))

    # -- writing ---------------------------------------------------------------

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
        if if_none_match or if_match is not None:
            raise UnsupportedError(f"{self!r} cannot write conditionally (supports_conditional_writes)")
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for chunk in chunks:  # errors of the caller's source pass unchanged
                spool.write(chunk)
            spool.seek(0)
            path = self._path(key)
            with _fs_errors(key):
                self._clear_way(key)
                if "/" in key:
                    self.fs.makedirs(path[: path.rfind("/")], exist_ok=True)
                self._commit(path, cast(BinaryIO, spool))
                return _etag(self.fs.info(path))

    def _commit(self, path: str, data: BinaryIO) -> None:
        """Write the file, visible only once complete where the filesystem defers commits."""
        file = self.fs.open(path, "wb", autocommit=False)
        try:
            shutil.copyfileobj(data, file, _CHUNK)
            file.close()
        except BaseException:
            with contextlib.suppress(Exception):
                file.discard()
            raise
        file.commit()

    def _clear_way(self, key: str) -> None:
        """Raise ``KeyConflictError`` if the tree has no room for ``key``; remove empty folders there."""
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if self.fs.isfile(self._path(folder)):
                raise KeyConflictError(key, f"the folder {folder!r} on its path is an object")
        path = self._path(key)
        if not self.fs.isdir(path):
            return
        below = self.fs.find(path, withdirs=True, detail=True)
        if any(info["type"] != "directory" for info in below.values()):
            raise KeyConflictError(key, f"{key!r} is a folder of other objects")
        for folder in sorted({path, *below}, key=len, reverse=True):
            self.fs.rmdir(folder)

    # -- reading ---------------------------------------------------------------

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        with _fs_errors(key):
            try:
                file = self.fs.open(self._path(key), "rb")
            except _MISSING as exc:
                raise NotExistError(key) from exc
            try:
                size = file.seek(0, 2)
            except BaseException:
                file.close()
                raise
        return cast(BinaryIO, io.BufferedReader(_FileRange(key, file, *clamp(start, end, size))))

    def _stat(self, key: str) -> ObjectInfo:
        with _fs_errors(key):
            try:
                info = self.fs.info(self._path(key))
            except _MISSING as exc:
                raise NotExistError(key) from exc
        if info.get("type") != "file":
            raise NotExistError(key)
        return self._object(key, info)

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> None:
        with _fs_errors(key):
            try:
                self.fs.rm_file(self._path(key))
            except _MISSING:
                return  # no object (a folder is not one)
            parts = key.split("/")[:-1]
            while parts:  # remove the folders the deletion left empty
                try:
                    self.fs.rmdir(self._path("/".join(parts)))
                except FileNotFoundError:
                    pass  # a folder that only the keys below it made
                except OSError:
                    return
                parts.pop()

    # -- listing ---------------------------------------------------------------

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        folder = prefix[: prefix.rfind("/") + 1]
        with _fs_errors(prefix):
            found = self.fs.find(self._path(folder[:-1]) if folder else self._root, detail=True)
        objects = []
        for name, info in found.items():
            key = name[len(self._base) :]
            if info.get("type") != "file" or not name.startswith(self._base) or not key.startswith(prefix):
                continue
            try:
                check_posix_key(key)
            except InvalidKeyError:
                continue  # not a name objstore writes
            objects.append(self._object(key, info))
        objects.sort(key=lambda info: info.key)
        cursor = ListCursor(start_after)
        infos = (info for info in objects if not cursor.passes_key(info.key))
        return infos if recursive else fold_levels(prefix, infos, cursor)


class _FileRange(RangeReader):
    """A range of a file open on the filesystem; its errors are objstore errors."""

    def __init__(self, key: str, file: Any, start: int, end: int) -> None:
        super().__init__(key, start, end)
        self._file = file

    def _read_at(self, offset: int, count: int) -> bytes:
        with _fs_errors(self._key):
            self._file.seek(offset)
            return bytes(self._file.read(count))

    def close(self) -> None:
        if self.closed:
            return
        try:
            with _fs_errors(self._key):
                self._file.close()
        finally:
            super().close()
