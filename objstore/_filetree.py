"""What the posix and posixflat backends share: a tree of files under a root folder.

Layout: ``<root>/data`` holds the objects, ``<root>/tmp`` the files being written (never
listed), ``<root>/locks`` the byte-range locks that make conditional writes atomic across
threads and processes. Every path is resolved one component at a time from an open
directory with ``O_NOFOLLOW``, so neither a key nor a symlink placed inside the root can
reach outside it.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import io
import itertools
import os
import secrets
import stat
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeVar, cast

from ._dirscan import sorted_entries
from ._listing import ListCursor, fold_levels
from .errors import (
    AlreadyExistsError,
    KeyConflictError,
    NotExistError,
    ObjstoreError,
    PermissionDeniedError,
    PreconditionFailedError,
    StorageIOError,
)
from .info import CommonPrefix, ObjectInfo
from .storage import Chunks, Storage

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_LOCK_STRIPES = 4096
_COMMIT_ATTEMPTS = 100
DEFAULT_TMP_GRACE = 3600.0

_Item = TypeVar("_Item", str, ObjectInfo)
_Emit = Callable[[int, str, str], "_Item | None"]
"""What a walk yields for each listed file: its key or its info (None: leave it out)."""


def _os_error(key: str, exc: OSError) -> ObjstoreError:
    if isinstance(exc, PermissionError):
        return PermissionDeniedError(f"permission denied for {key!r}: {exc}")
    return StorageIOError(exc.errno, f"{exc.strerror or exc} (for {key!r})")


def _write_all(key: str, fd: int, chunk: bytes | memoryview) -> None:
    try:
        written = os.write(fd, chunk)
        if written < len(chunk):  # rare: a short write
            view = memoryview(chunk)[written:]
            while view:
                view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _os_error(key, exc) from exc


def _finish_file(key: str, fd: int, persist: bool) -> os.stat_result:
    """Stamp the written file with the time of this version, sync it if asked; its stat."""
    try:
        now = time.time_ns()
        os.utime(fd, ns=(now, now))
        if persist:
            os.fsync(fd)
        return os.fstat(fd)
    except OSError as exc:
        raise _os_error(key, exc) from exc


def _read_rest(key: str, fd: int, size: int) -> bytes:
    """Read the file from its position to its end, ``size`` bytes (objects never change)."""
    try:
        chunks = []
        while size > 0 and (chunk := os.read(fd, size)):
            chunks.append(chunk)
            size -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise _os_error(key, exc) from exc


class _ObjectFile(io.RawIOBase):
    """An object's file, read and sought like a plain file; I/O errors are objstore errors."""

    def __init__(self, key: str, fd: int) -> None:
        self._key = key
        self._fd = fd

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: Any) -> int:
        try:
            return os.readv(self._fd, [buffer])
        except OSError as exc:
            raise _os_error(self._key, exc) from exc

    def readall(self) -> bytes:
        position = self.tell()
        try:
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise _os_error(self._key, exc) from exc
        return _read_rest(self._key, self._fd, max(0, size - position))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        try:
            return os.lseek(self._fd, offset, whence)
        except OSError as exc:
            raise _os_error(self._key, exc) from exc

    def tell(self) -> int:
        return self.seek(0, os.SEEK_CUR)

    def close(self) -> None:
        if self.closed:
            return
        try:
            os.close(self._fd)
        finally:
            super().close()


def is_utf8(name: str) -> bool:
    """Whether a file name read from disk is valid UTF-8 (and so can be a key's)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _remove_empty_tree(parent: int, name: str) -> bool:
    """Remove the folder ``name`` if it holds nothing but empty folders; whether it did."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return False
    try:
        with os.scandir(fd) as entries:
            children = list(entries)
        if not all(
            child.is_dir(follow_symlinks=False) and _remove_empty_tree(fd, child.name) for child in children
        ):
            return False
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _new_thread_locks() -> list[threading.Lock]:
    return [threading.Lock() for _ in range(_LOCK_STRIPES)]


_OPEN_STORES: weakref.WeakSet[FileTreeStorage] = weakref.WeakSet()


def _renew_thread_locks() -> None:
    """In a forked child, free the stripes that threads of the parent held at the fork.

    Those threads do not exist in the child; their byte-range locks were not inherited.
    """
    for store in list(_OPEN_STORES):
        store._thread_locks = _new_thread_locks()


os.register_at_fork(after_in_child=_renew_thread_locks)


def _etag(st: os.stat_result) -> str:
    return "%x-%x-%x" % (st.st_ino, st.st_mtime_ns, st.st_size)  # noqa: UP031 - 3x faster than an f-string


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc),
        etag=_etag(st),
    )


class FileTreeStorage(Storage):
    """Objects as files under ``<root>/data``; subclasses map keys to paths."""

    def __init__(self, root: str | os.PathLike[str], *, tmp_grace: float = DEFAULT_TMP_GRACE) -> None:
        self.root = os.path.abspath(os.fspath(root))
        try:
            for name in ("data", "tmp"):
                os.makedirs(os.path.join(self.root, name), exist_ok=True)
            self._data_fd = os.open(os.path.join(self.root, "data"), _DIR_FLAGS)
            self._tmp_fd = os.open(os.path.join(self.root, "tmp"), _DIR_FLAGS)
            self._lock_fd = os.open(
                os.path.join(self.root, "locks"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666
            )
        except OSError as exc:
            raise _os_error(self.root, exc) from exc
        self._open_fds: tuple[int, ...] = (self._data_fd, self._tmp_fd, self._lock_fd)
        self._thread_locks = _new_thread_locks()
        _OPEN_STORES.add(self)
        self._tmp_prefix = ""
        self._tmp_prefix_pid = -1
        self._tmp_counter = itertools.count()
        self.remove_stale_temporaries(tmp_grace)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    def close(self) -> None:
        """Close the store's folders; a second call does nothing."""
        fds, self._open_fds = self._open_fds, ()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def remove_stale_temporaries(self, older_than: float = DEFAULT_TMP_GRACE) -> int:
        """Remove temporary files of writers that stopped more than ``older_than`` seconds ago."""
        limit = time.time() - older_than
        removed = 0
        with os.scandir(self._tmp_fd) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < limit:
                        os.unlink(entry.name, dir_fd=self._tmp_fd)
                        removed += 1
        return removed

    # -- what a subclass defines -------------------------------------------------

    @abc.abstractmethod
    def _path(self, key: str) -> list[str]:
        """The file names leading from the data folder to the object's file."""

    @abc.abstractmethod
    def _sort_key(self, entry: os.DirEntry[str]) -> str | None:
        """An entry's sort key (its key order within its folder), or None to hide it."""

    @abc.abstractmethod
    def _child(self, scope: str, sort_key: str) -> tuple[str, str, str | None]:
        """An entry of the folder ``scope``: its file name, its key (for a folder, the
        prefix of every key inside), and for a folder the scope inside it."""

    @abc.abstractmethod
    def _start(self, prefix: str) -> tuple[list[str], str, str] | None:
        """The folder to list ``prefix`` from, if any: its names from the data folder, its
        scope, and the prefix of every key inside it."""

    # -- locking and path resolution -------------------------------------------------

    def _lock(self, key: str) -> int:
        """Take the key's lock, between threads and between processes; its stripe, to unlock."""
        stripe = zlib.crc32(key.encode("utf-8", "surrogatepass")) % _LOCK_STRIPES
        thread_lock = self._thread_locks[stripe]
        thread_lock.acquire()
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX, 1, stripe)
        except BaseException:
            thread_lock.release()
            raise
        return stripe

    def _unlock(self, stripe: int) -> None:
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_UN, 1, stripe)
        finally:
            self._thread_locks[stripe].release()

    def _open_dirs(self, key: str, names: list[str], *, create: bool) -> list[int]:
        """Open the folders ``names`` below the data folder and return their fds.

        Raises FileNotFoundError when a folder is missing (or is not a folder) and
        ``create`` is false; with ``create``, makes missing folders, and raises
        FileNotFoundError only if a parent folder was removed meanwhile.
        """
        fds: list[int] = []
        try:
            for name in names:
                fds.append(self._open_dir(key, fds[-1] if fds else self._data_fd, name, create))
        except BaseException:
            self._close(fds)
            raise
        return fds

    def _open_dir(self, key: str, parent: int, name: str, create: bool) -> int:
        for _ in range(_COMMIT_ATTEMPTS):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise _os_error(key, exc) from exc
                if not create:
                    raise FileNotFoundError(errno.ENOENT, name) from exc
                raise KeyConflictError(
                    key, f"the folder {name!r} on its path is an object (or a link)"
                ) from exc
            try:
                os.mkdir(name, dir_fd=parent)
            except FileExistsError:
                pass
            except FileNotFoundError:
                raise  # the parent folder was removed: the caller resolves the path again
            except OSError as exc:
                raise _os_error(key, exc) from exc
        raise StorageIOError(errno.EAGAIN, f"could not make the folders of {key!r}: they kept disappearing")

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)

    # -- writing ---------------------------------------------------------------

    def _tmp_name(self) -> str:
        pid = os.getpid()
        if self._tmp_prefix_pid != pid:
            self._tmp_prefix = f"{pid}-{secrets.token_hex(6)}-"
            self._tmp_prefix_pid = pid
        return f"{self._tmp_prefix}{next(self._tmp_counter)}.tmp"

    def _write(
        self, key: str, chunks: Chunks, *, persist: bool, if_none_match: bool, if_match: str | None
    ) -> str:
        tmp_name = self._tmp_name()
        try:
            fd = os.open(
                tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=self._tmp_fd
            )
        except OSError as exc:
            raise _os_error(key, exc) from exc
        try:
            try:
                for chunk in chunks:  # errors of the caller's source pass unchanged
                    _write_all(key, fd, chunk)
                written = _finish_file(key, fd, persist)
            finally:
                os.close(fd)
            return self._commit(key, tmp_name, written, persist, if_none_match, if_match)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=self._tmp_fd)
            raise

    def _commit(
        self,
        key: str,
        tmp_name: str,
        written: os.stat_result,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
    ) -> str:
        """Rename the written file into place, if the conditions hold; return its etag."""
        *dirs, name = self._path(key)
        conditional = if_none_match or if_match is not None
        try:
            stripe = self._lock(key)
            try:
                for _ in range(_COMMIT_ATTEMPTS):
                    try:
                        fds = self._open_dirs(key, dirs, create=True)
                    except FileNotFoundError:
                        continue  # a folder on the path was removed while being made: start again
                    parent = fds[-1] if fds else self._data_fd
                    try:
                        if conditional:
                            written = self._check(
                                key, parent, name, tmp_name, written, if_none_match, if_match
                            )
                        try:
                            os.rename(tmp_name, name, src_dir_fd=self._tmp_fd, dst_dir_fd=parent)
                        except FileNotFoundError:
                            continue  # a deleter removed the (empty) parent folder: make it again
                        except IsADirectoryError as exc:
                            if _remove_empty_tree(parent, name):
                                continue  # empty folders left by a crashed writer
                            raise KeyConflictError(key, f"{key!r} is a folder of other objects") from exc
                        if persist:
                            for fd in [self._data_fd, *fds]:
                                os.fsync(fd)
                        return _etag(written)
                    except BaseException:
                        self._prune(dirs, fds)  # the folders this write made, if left empty
                        raise
                    finally:
                        self._close(fds)
            finally:
                self._unlock(stripe)
        except OSError as exc:
            if isinstance(exc, ObjstoreError):
                raise
            raise _os_error(key, exc) from exc
        raise StorageIOError(errno.EAGAIN, f"could not commit {key!r}: its folder kept disappearing")

    def _check(
        self,
        key: str,
        parent: int,
        name: str,
        tmp_name: str,
        written: os.stat_result,
        if_none_match: bool,
        if_match: str | None,
    ) -> os.stat_result:
        """Raise unless the conditions hold for the current object; the file to commit."""
        try:
            current = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if if_match is not None:
                raise NotExistError(key) from None
            return written
        if stat.S_ISDIR(current.st_mode):
            return written  # the rename decides: an empty folder gives way, a full one conflicts
        if if_none_match:
            raise AlreadyExistsError(key)
        if if_match is not None and _etag(current) != if_match:
            raise PreconditionFailedError(key, if_match)
        if current.st_mtime_ns < written.st_mtime_ns:
            return written
        later = current.st_mtime_ns + 1  # versions of one key never share an etag
        os.utime(tmp_name, ns=(later, later), dir_fd=self._tmp_fd)
        return os.stat(tmp_name, dir_fd=self._tmp_fd)

    # -- reading ---------------------------------------------------------------

    def _open_file(self, key: str) -> tuple[int, os.stat_result]:
        """Open the object's file for reading: its fd and stat. Never blocks, never follows a link."""
        *dirs, name = self._path(key)
        try:
            fds = self._open_dirs(key, dirs, create=False)
        except FileNotFoundError as exc:
            raise NotExistError(key) from exc
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=fds[-1] if fds else self._data_fd)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotExistError(key) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotExistError(key) from exc
            raise _os_error(key, exc) from exc
        finally:
            self._close(fds)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotExistError(key)
        return fd, st

    def _read(self, key: str) -> BinaryIO:
        fd, _ = self._open_file(key)
        return cast(BinaryIO, io.BufferedReader(_ObjectFile(key, fd)))

    def read_bytes(self, key: str) -> bytes:
        fd, st = self._open_file(self.check_key(key))
        try:
            return _read_rest(key, fd, st.st_size)
        finally:
            os.close(fd)

    def _stat(self, key: str) -> ObjectInfo:
        fd, st = self._open_file(key)
        os.close(fd)
        return _info(key, st)

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> None:
        *dirs, name = self._path(key)
        try:
            stripe = self._lock(key)
        except OSError as exc:
            raise _os_error(key, exc) from exc
        try:
            self._delete_locked(key, dirs, name)
        finally:
            self._unlock(stripe)

    def _delete_locked(self, key: str, dirs: list[str], name: str) -> None:
        try:
            fds = self._open_dirs(key, dirs, create=False)
        except FileNotFoundError:
            return
        try:
            parent = fds[-1] if fds else self._data_fd
            try:
                os.unlink(name, dir_fd=parent)
            except (FileNotFoundError, IsADirectoryError):
                return  # no object (a folder is not one)
            except OSError as exc:
                raise _os_error(key, exc) from exc
            self._prune(dirs, fds)
        finally:
            self._close(fds)

    def _prune(self, dirs: list[str], fds: list[int]) -> None:
        """Remove the folders that the deletion left empty, deepest first."""
        parents = [self._data_fd, *fds][: len(dirs)]
        for name, parent in zip(reversed(dirs), reversed(parents), strict=True):
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError:
                return

    # -- listing ---------------------------------------------------------------

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        cursor = ListCursor(start_after)
        infos = self._walk_from(prefix, cursor, _describe)
        return infos if recursive else fold_levels(prefix, infos, cursor)

    def _list_keys(self, prefix: str, start_after: str, recursive: bool) -> Iterator[str | CommonPrefix]:
        cursor = ListCursor(start_after)
        keys = self._walk_from(prefix, cursor, _key_only)
        return keys if recursive else fold_levels(prefix, keys, cursor)

    def _walk_from(self, prefix: str, cursor: ListCursor, emit: _Emit[_Item]) -> Iterator[_Item]:
        start = self._start(prefix)
        if start is None:
            return
        names, scope, scope_key = start
        try:
            fds = self._open_dirs(prefix, names, create=False)
        except FileNotFoundError:
            return
        try:
            yield from self._walk(fds[-1] if fds else self._data_fd, scope, scope_key, prefix, cursor, emit)
        finally:
            self._close(fds)

    def _walk(
        self, dir_fd: int, scope: str, scope_key: str, prefix: str, cursor: ListCursor, emit: _Emit[_Item]
    ) -> Iterator[_Item]:
        """Yield the listed objects of the folder ``dir_fd`` and the folders inside it, in order.

        ``scope`` is the folder's scope (see ``_child``), ``scope_key`` the prefix of
        every key inside it.
        """

        def wanted(sort_key: str) -> bool:
            _, key, inner = self._child(scope, sort_key)
            if inner is not None:
                return (key.startswith(prefix) or prefix.startswith(key)) and not cursor.passes_range(key)
            return key.startswith(prefix) and not cursor.passes_key(key)

        # A folder whose keys all lie within the prefix and after start_after needs no filter.
        inside = (
            scope_key.startswith(prefix)
            and scope_key > cursor.start_after
            and not cursor.start_after.startswith(scope_key)
        )
        child = self._child
        for sort_key in sorted_entries(dir_fd, self._sort_key, None if inside else wanted):
            name, key, inner = child(scope, sort_key)
            if inner is not None:
                if cursor.passes_range(key):
                    continue
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    continue  # removed or replaced since it was listed
                try:
                    yield from self._walk(fd, inner, key, prefix, cursor, emit)
                finally:
                    os.close(fd)
            elif (cursor.skip_prefix is None and inside) or not cursor.passes_key(key):
                # (inside, only a folded level could make the cursor pass a key)
                item = emit(dir_fd, name, key)
                if item is not None:
                    yield item


def _describe(dir_fd: int, name: str, key: str) -> ObjectInfo | None:
    """The listed object's info, or None if it is gone or no longer a file."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return _info(key, st) if stat.S_ISREG(st.st_mode) else None


def _key_only(dir_fd: int, name: str, key: str) -> str:
    """The listed object's key (the folder scan saw a regular file)."""
    return key
