"""What the posix and posixflat backends share: a tree of files under a root folder.

Layout: ``<root>/data`` holds the objects, ``<root>/tmp`` the files being written (never
listed, only its owner may enter it), ``<root>/locks`` the byte-range locks that make
conditional writes atomic across threads, store objects and processes (only its owner
may open it). The root is opened once; ``data``, ``tmp`` and ``locks`` are opened from it,
and every other path one component at a time from an open directory, always with
``O_NOFOLLOW``, so neither a key nor a symlink placed inside the root can reach outside it.

Locks are Linux open-file-description locks on the store object's own open of
``<root>/locks``, so each store object excludes every other one, in this process or
another; elsewhere they fall back to ``lockf`` (see :class:`FileTreeStorage`).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import io
import itertools
import logging
import os
import secrets
import stat
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal, TypeVar, cast

import attrs

from . import _xattrs
from ._dirscan import sorted_entries
from ._listing import ListCursor, fold_levels
from ._ranges import RangeReader, clamp
from ._source import iter_chunks
from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    KeyConflictError,
    NotExistError,
    ObjectChangedError,
    ObjstoreError,
    PermissionDeniedError,
    PreconditionFailedError,
    StorageIOError,
)
from .info import CleanupResult, CommonPrefix, ObjectInfo
from .storage import Chunks, Storage

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks
_LOCK_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks the open
_LOCK_STRIPES = 4096
_COMMIT_ATTEMPTS = 100
_MAX_EMPTY_DEPTH = 600  # deeper than the folders of any key (a key has at most 512 segments)
DEFAULT_TMP_GRACE = 3600.0
"""Seconds after which a temporary file, or an empty folder, counts as left by a crash."""

_log = logging.getLogger("objstore")

_FLOCK = struct.Struct("hhqqi0q")
"""Linux's ``struct flock`` as ``F_OFD_SETLK(W)`` reads it: short l_type, short l_whence,
off_t l_start, off_t l_len, pid_t l_pid (0 for these locks), padded at the end to the
alignment of off_t ("0q"). off_t is 64-bit (CPython builds with large-file support), so
it is 32 bytes on 64-bit Linux (``struct.calcsize`` agrees with the C ``sizeof``), 24 on
i386."""


def _ofd_commands() -> tuple[int, int] | None:
    """``(F_OFD_SETLKW, F_OFD_SETLK)`` where the platform has open-file-description locks."""
    wait, try_ = getattr(fcntl, "F_OFD_SETLKW", None), getattr(fcntl, "F_OFD_SETLK", None)
    return None if wait is None or try_ is None else (wait, try_)


_OFD_LOCKS = _ofd_commands()

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


class _ObjectFile(RangeReader):
    """A range of an object's file, read at its offsets; I/O errors are objstore errors."""

    def __init__(self, key: str, fd: int, start: int, end: int) -> None:
        super().__init__(key, start, end)
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def _read_at(self, offset: int, count: int) -> bytes:
        try:
            return os.pread(self._fd, count, offset)
        except OSError as exc:
            raise _os_error(self._key, exc) from exc

    def _readinto_at(self, offset: int, view: memoryview) -> int:
        try:
            return os.preadv(self._fd, [view], offset)  # straight into the caller's buffer
        except OSError as exc:
            raise _os_error(self._key, exc) from exc

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
    """Remove the folder ``name`` of ``parent`` if it holds nothing but empty folders, at most
    :data:`_MAX_EMPTY_DEPTH` deep; whether it did. Iterative: any depth is safe."""
    path: list[tuple[int, str, list[str]]] = []  # the open folders: fd, name, subfolders left
    entering: str | None = name
    try:
        while True:
            if entering is not None:
                if len(path) == _MAX_EMPTY_DEPTH:
                    return False
                fd = os.open(entering, _DIR_FLAGS, dir_fd=path[-1][0] if path else parent)
                path.append((fd, entering, []))
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if not entry.is_dir(follow_symlinks=False):
                            return False
                        path[-1][2].append(entry.name)
            fd, folder, left = path[-1]
            if left:
                entering = left.pop()
                continue
            path.pop()
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(folder, dir_fd=path[-1][0] if path else parent)
            if not path:
                return True
            entering = None
    except OSError:
        return False
    finally:
        for fd, _, _ in path:
            os.close(fd)


def _new_thread_locks() -> list[threading.Lock]:
    return [threading.Lock() for _ in range(_LOCK_STRIPES)]


def _flock(lock_type: int, stripe: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, stripe, 1, 0)


def _lock_byte(fd: int, stripe: int, ofd: tuple[int, int] | None) -> None:
    """Wait for the write lock on byte ``stripe`` of the lock file ``fd``: owned by that open
    file with ``ofd`` commands, by the process without."""
    if ofd is None:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, stripe)
    else:
        fcntl.fcntl(fd, ofd[0], _flock(fcntl.F_WRLCK, stripe))


def _unlock_byte(fd: int, stripe: int, ofd: tuple[int, int] | None) -> None:
    if ofd is None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, stripe)
    else:
        fcntl.fcntl(fd, ofd[1], _flock(fcntl.F_UNLCK, stripe))


def _ofd_locks_for(fd: int) -> tuple[int, int] | None:
    """The OFD lock commands if the kernel takes them on ``fd`` (Linux 3.15 and later), else None."""
    if _OFD_LOCKS is None:
        return None
    try:
        _unlock_byte(fd, 0, _OFD_LOCKS)  # unlocking what is not locked changes nothing
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None
    return _OFD_LOCKS


_OPEN_STORES: weakref.WeakSet[FileTreeStorage] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_OPEN_STORES):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link (the store never follows one out of its root)"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def _refusal(path: str, parent: int, name: str, wanted: str, exc: OSError | None) -> ObjstoreError:
    """The error for the root entry ``name`` (at ``path``) that is not ``wanted``, or could not be opened."""
    if exc is not None and exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
        return _os_error(path, exc)
    try:
        found = _kind(os.stat(name, dir_fd=parent, follow_symlinks=False))
    except OSError:
        found = "not usable"
    code = errno.EINVAL if exc is None else exc.errno
    return StorageIOError(code, f"{path} is {found}, not {wanted}: refusing to open the store")


def _open_same(parent: int, name: str, identity: tuple[int, int]) -> int | None:
    """Open the folder ``name`` of ``parent`` if it is the folder ``identity``, else None."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return None
    with contextlib.suppress(OSError):
        if _identity(os.fstat(fd)) == identity:
            return fd
    os.close(fd)
    return None


def _narrow(fd: int, st: os.stat_result) -> None:
    """Take group and other permissions away from our file (or folder) ``fd``, if it has any."""
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)


def _limit_ns(older_than: float) -> int:
    """The time before which (inclusive) a leftover is older than ``older_than`` seconds."""
    if not isinstance(older_than, (int, float)) or not older_than >= 0:
        raise InvalidArgumentError(f"older_than is a number of seconds, at least 0, not {older_than!r}")
    return time.time_ns() - int(min(older_than, 1e12) * 1e9)  # (nothing is 30,000 years old)


@attrs.define
class _Level:
    """A folder on the path of the folder sweep."""

    name: str  # its name in its parent
    identity: tuple[int, int]
    stale: bool  # it was last changed before the limit, when the sweep came in
    pending: list[str]  # its folders the sweep has yet to visit
    keep: bool = False  # it holds something that stays


def _etag(st: os.stat_result) -> str:
    return "%x-%x-%x" % (st.st_ino, st.st_mtime_ns, st.st_size)  # noqa: UP031 - 3x faster than an f-string


def _info(key: str, st: os.stat_result, attributes: Attributes) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
        etag=_etag(st),
        content_type=attributes.content_type,
        metadata=attributes.metadata,
    )


def _store_attributes(key: str, fd: int, attributes: Attributes, where: str) -> None:
    try:
        _xattrs.store(fd, attributes, where)
    except OSError as exc:
        if isinstance(exc, ObjstoreError):
            raise
        raise _os_error(key, exc) from exc


def _load_attributes(key: str, fd: int, st: os.stat_result) -> Attributes:
    try:
        return _xattrs.load(key, fd, st)
    except OSError as exc:
        if isinstance(exc, ObjstoreError):
            raise
        raise _os_error(key, exc) from exc


class FileTreeStorage(Storage):
    """Objects as files under ``<root>/data``; subclasses map keys to paths.

    Any number of store objects, threads and processes may use one root at once: each
    store object locks keys through its own open of ``<root>/locks`` (Linux
    open-file-description locks), and a forked child opens it again for itself. Where
    those locks are missing (not Linux), ``lockf`` locks serve, which belong to the
    process: processes still exclude each other, and so do the threads of one store
    object, but two store objects on one root in one process do not, and closing one of
    them drops the locks the other holds; there, use one store object per root and process.

    A store pickles as its root and ``tmp_grace``: unpickling (or ``copy.copy``) opens the
    root again, as the constructor does, even if the original was closed, and the copy
    is one more store object on that root.

    An object's content type and metadata live in an extended attribute of its file
    (Linux); on a filesystem without them, a write that has some raises ``UnsupportedError``.
    """

    supports_metadata = _xattrs.AVAILABLE

    def __init__(self, root: str | os.PathLike[str], *, tmp_grace: float = DEFAULT_TMP_GRACE) -> None:
        """Open the store at ``root``, making what is missing, and remove the leftovers of
        crashed writers older than ``tmp_grace`` seconds (see :meth:`cleanup`): its
        temporary files, and, only if there were some, its empty folders.

        Raises ``StorageIOError`` or ``PermissionDeniedError``, naming the path, if the root
        or its ``data``, ``tmp`` or ``locks`` cannot be opened or is a link or of the wrong
        kind; nothing stays open then.
        """
        self.root = os.path.abspath(os.fspath(root))
        self._tmp_grace = tmp_grace
        self._open_fds: tuple[int, ...] = ()
        fds: list[int] = []
        try:
            fds.append(self._open_root())
            fds.append(self._open_folder(fds[0], "data"))
            fds.append(self._open_folder(fds[0], "tmp", private=True))
            fds.append(self._open_lock_file(fds[0]))
            self._root_fd, self._data_fd, self._tmp_fd, self._lock_fd = fds
            self._ofd_locks = _ofd_locks_for(self._lock_fd)
            self._open_fds = tuple(fds)
            self._thread_locks = _new_thread_locks()
            self._lost_lock: OSError | None = None
            self._tmp_prefix = ""
            self._tmp_prefix_pid = -1
            self._tmp_counter = itertools.count()
            limit = _limit_ns(tmp_grace)
            if self._remove_stale_temporaries(limit):
                self._remove_empty_folders(limit)  # a writer crashed: its folders may be left too
        except BaseException as exc:
            self._open_fds = ()
            self._close(fds)
            if isinstance(exc, OSError) and not isinstance(exc, ObjstoreError):
                raise _os_error(self.root, exc) from exc
            raise
        _OPEN_STORES.add(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    def __getstate__(self) -> dict[str, Any]:
        """What opens the store again: its root and grace, never its descriptors or locks."""
        return {"root": self.root, "tmp_grace": self._tmp_grace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        FileTreeStorage.__init__(self, state["root"], tmp_grace=state["tmp_grace"])

    def close(self) -> None:
        """Close the store's folders and lock file; a second call does nothing. A closed
        store raises ``StorageIOError``: its descriptors' numbers may belong to others now."""
        _OPEN_STORES.discard(self)
        fds, self._open_fds = self._open_fds, ()
        self._root_fd = self._data_fd = self._tmp_fd = self._lock_fd = -1
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _ensure_open(self) -> None:
        if not self._open_fds:
            raise StorageIOError(errno.EBADF, f"the store at {self.root} is closed")

    # -- opening -------------------------------------------------------------------

    def _open_root(self) -> int:
        """Open the root folder, making it if missing (the root itself may be a link)."""
        try:
            os.makedirs(self.root, exist_ok=True)
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(self.root, exc) from exc

    def _open_folder(self, root_fd: int, name: str, *, private: bool = False) -> int:
        """Open the folder ``name`` of the root, making it if missing, never through a link;
        a ``private`` one is the owner's alone."""
        path = os.path.join(self.root, name)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700 if private else 0o777, dir_fd=root_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as exc:
            raise _refusal(path, root_fd, name, "a folder", exc) from exc
        try:
            if private:
                _narrow(fd, os.fstat(fd))
        except OSError as exc:
            os.close(fd)
            raise _os_error(path, exc) from exc
        return fd

    def _open_lock_file(self, root_fd: int) -> int:
        """Open the lock file, making it (the owner's alone) if missing, never through a link."""
        path = os.path.join(self.root, "locks")
        try:
            fd = os.open("locks", _LOCK_FLAGS | os.O_CREAT, 0o600, dir_fd=root_fd)
        except OSError as exc:
            raise _refusal(path, root_fd, "locks", "a regular file", exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _refusal(path, root_fd, "locks", "a regular file", None)
            if st.st_nlink != 1:
                raise StorageIOError(errno.EMLINK, f"{path} has other links: refusing to open the store")
            _narrow(fd, st)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError) and not isinstance(exc, ObjstoreError):
                raise _os_error(path, exc) from exc
            raise
        return fd

    def _after_fork(self) -> None:
        """In a forked child: free the stripes that threads of the parent held at the fork, and
        take a lock file of its own (the inherited one shares its locks with the parent)."""
        self._thread_locks = _new_thread_locks()
        if self._ofd_locks is None or not self._open_fds:
            return  # lockf locks belong to the process: the child holds none
        try:
            fd = os.open("locks", _LOCK_FLAGS, dir_fd=self._root_fd)
            try:
                if _identity(os.fstat(fd)) != _identity(os.fstat(self._lock_fd)):
                    raise StorageIOError(errno.ESTALE, f"{self.root}/locks was replaced")
                os.dup2(fd, self._lock_fd, inheritable=False)
            finally:
                os.close(fd)
        except OSError as exc:
            self._lost_lock = exc  # its writes and deletes fail rather than go unlocked

    # -- cleaning up -------------------------------------------------------------------

    def cleanup(self, older_than: float = DEFAULT_TMP_GRACE) -> CleanupResult:
        """Remove the leftovers of crashed writers and deleters last changed more than
        ``older_than`` seconds ago: temporary files, and folders of the data tree that hold
        nothing but such folders.

        Files, links and anything else in the data tree stay, and so do the folders that
        hold them. An entry that cannot be removed is logged (to the ``objstore`` logger)
        and skipped. A write that stalls for more than ``older_than`` seconds (its temporary
        file unchanged that long) loses that file and fails with ``StorageIOError``.
        """
        self._ensure_open()
        limit = _limit_ns(older_than)
        return CleanupResult(self._remove_stale_temporaries(limit), self._remove_empty_folders(limit))

    def _remove_stale_temporaries(self, limit_ns: int) -> int:
        """Remove the temporary files last changed at or before ``limit_ns``; how many went."""
        path = os.path.join(self.root, "tmp")
        try:
            fd = os.open(".", _DIR_FLAGS, dir_fd=self._tmp_fd)  # a reading position of its own
            try:
                with os.scandir(fd) as entries:
                    return sum(self._remove_temporary(path, entry, limit_ns) for entry in entries)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(path, exc) from exc

    def _remove_temporary(self, folder: str, entry: os.DirEntry[str], limit_ns: int) -> bool:
        """Remove the entry of the tmp folder if it is stale; whether it went (a failure is logged)."""
        try:
            if entry.stat(follow_symlinks=False).st_mtime_ns > limit_ns:
                return False
            os.unlink(entry.name, dir_fd=self._tmp_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            _log.warning("could not remove the stale temporary %s: %s", os.path.join(folder, entry.name), exc)
            return False
        return True

    def _remove_empty_folders(self, limit_ns: int) -> int:
        """Remove the folders of the data tree that hold nothing but such folders and were
        last changed at or before ``limit_ns``; how many went.

        Walks without recursion, with one folder open at a time, never through a link.
        """
        removed = 0
        try:
            fd = os.open(".", _DIR_FLAGS, dir_fd=self._data_fd)
        except OSError as exc:
            raise _os_error(os.path.join(self.root, "data"), exc) from exc
        try:
            path = [self._scan(fd, "", limit_ns)]
            while len(path) > 1 or path[0].pending:
                level = path[-1]
                if level.pending:
                    entered = self._enter(fd, level, limit_ns)
                    if entered is not None:
                        fd, left = entered[0], fd
                        os.close(left)
                        path.append(entered[1])
                    continue
                path.pop()
                up = self._up(fd, path)
                if up is None:
                    _log.warning("the data tree of %s changed under the folder sweep: stopped", self.root)
                    break
                fd, left = up, fd
                os.close(left)
                outcome = self._remove_folder(fd, level)
                removed += outcome == "removed"
                if outcome == "kept":
                    path[-1].keep = True
        finally:
            os.close(fd)
        return removed

    def _scan(self, fd: int, name: str, limit_ns: int) -> _Level:
        """The sweep's view of the open folder ``fd``, named ``name`` in its parent."""
        level = _Level(name, (-1, -1), False, [])
        try:
            st = os.fstat(fd)
            level.identity, level.stale = _identity(st), st.st_mtime_ns <= limit_ns
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        level.pending.append(entry.name)
                    else:
                        level.keep = True
        except OSError as exc:
            _log.warning("could not list the folder %r of %s: %s", name, self.root, exc)
            level.keep = True
        return level

    def _enter(self, fd: int, level: _Level, limit_ns: int) -> tuple[int, _Level] | None:
        """Open and scan the next pending folder of ``level`` (open as ``fd``), if it is still one."""
        name = level.pending.pop()
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError:
            level.keep = True  # now a link or a file, or closed to us
            return None
        try:
            return child, self._scan(child, name, limit_ns)
        except BaseException:
            os.close(child)
            raise

    def _up(self, fd: int, path: list[_Level]) -> int | None:
        """Open the parent of the folder ``fd``, the last folder of ``path``; None if it moved."""
        up = _open_same(fd, "..", path[-1].identity)
        if up is not None:
            return up
        # The folder was removed or moved meanwhile: find its parent again from the top.
        fds: list[int] = []
        try:
            parent = self._data_fd
            for level in path[1:]:
                inner = _open_same(parent, level.name, level.identity)
                if inner is None:
                    return None
                fds.append(inner)
                parent = inner
            return fds.pop() if fds else _open_same(self._data_fd, ".", path[0].identity)
        finally:
            self._close(fds)

    @staticmethod
    def _remove_folder(parent: int, level: _Level) -> Literal["removed", "gone", "kept"]:
        """Remove the swept folder ``level`` of ``parent`` if it is stale and holds nothing."""
        if level.keep or not level.stale:
            return "kept"
        try:
            if _identity(os.stat(level.name, dir_fd=parent, follow_symlinks=False)) != level.identity:
                return "kept"  # another folder took its place
            os.rmdir(level.name, dir_fd=parent)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "kept"  # something arrived meanwhile
        return "removed"

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
        """Take the key's lock, between the threads of this store object and between store
        objects (of this process or another); its stripe, to unlock."""
        if self._lost_lock is not None:
            raise StorageIOError(
                errno.ENOLCK, f"{self.root}: this forked process could not open a lock file of its own"
            ) from self._lost_lock
        stripe = zlib.crc32(key.encode("utf-8", "surrogatepass")) % _LOCK_STRIPES
        thread_lock = self._thread_locks[stripe]
        thread_lock.acquire()
        try:
            _lock_byte(self._lock_fd, stripe, self._ofd_locks)
        except BaseException:
            thread_lock.release()
            raise
        return stripe

    def _unlock(self, stripe: int) -> None:
        try:
            _unlock_byte(self._lock_fd, stripe, self._ofd_locks)
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
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> str:
        self._ensure_open()
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
                _store_attributes(key, fd, attributes, repr(self))
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
                        except FileNotFoundError as exc:
                            if not self._is_temporary(tmp_name):
                                raise StorageIOError(
                                    errno.ENOENT,
                                    f"the temporary file of {key!r} was removed before its commit"
                                    " (by a cleanup with a grace shorter than the write?)",
                                ) from exc
                            continue  # a deleter or a cleanup removed the (empty) parent folder
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

    def _is_temporary(self, tmp_name: str) -> bool:
        try:
            os.stat(tmp_name, dir_fd=self._tmp_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

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
        self._ensure_open()
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

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        return self._read_version(key, start, end, None)

    def _read_version(self, key: str, start: int, end: int | None, etag: str | None) -> BinaryIO:
        fd, st = self._open_file(key)  # the version it opens stays readable, whatever comes next
        if etag is not None and _etag(st) != etag:
            os.close(fd)
            raise ObjectChangedError(key, etag)
        return cast(BinaryIO, io.BufferedReader(_ObjectFile(key, fd, *clamp(start, end, st.st_size))))

    def read_bytes(self, key: str) -> bytes:
        fd, st = self._open_file(self.check_key(key))
        try:
            return _read_rest(key, fd, st.st_size)
        finally:
            os.close(fd)

    def _stat(self, key: str) -> ObjectInfo:
        fd, st = self._open_file(key)
        try:
            return _info(key, st, _load_attributes(key, fd, st))
        finally:
            os.close(fd)

    def _copy(self, src: str, dst: str) -> str:
        fd, st = self._open_file(src)  # one version: its bytes and attributes
        with _ObjectFile(src, fd, 0, st.st_size) as source:
            attributes = _load_attributes(src, fd, st)
            chunks = iter_chunks(dst, cast(BinaryIO, source), st.st_size)
            return self._write(
                dst, chunks, persist=False, if_none_match=False, if_match=None, attributes=attributes
            )

    # -- deleting ---------------------------------------------------------------

    def _delete(self, key: str) -> None:
        self._ensure_open()
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
        self._ensure_open()
        start = self._start(prefix)
        if start is None:
            return
        names, scope, scope_key = start
        try:  # (the data folder is opened again: a listing needs a reading position of its own)
            fds = self._open_dirs(prefix, names or ["."], create=False)
        except FileNotFoundError:
            return
        try:
            yield from self._walk(fds[-1], scope, scope_key, prefix, cursor, emit)
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
    if not stat.S_ISREG(st.st_mode):
        return None
    if not _xattrs.marked(st):
        return _info(key, st, DEFAULT_ATTRIBUTES)
    try:  # its attributes, from the same version as its stat
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # replaced by a link
        raise _os_error(key, exc) from exc
    try:
        st = os.fstat(fd)
        return _info(key, st, _load_attributes(key, fd, st)) if stat.S_ISREG(st.st_mode) else None
    finally:
        os.close(fd)


def _key_only(dir_fd: int, name: str, key: str) -> str:
    """The listed object's key (the folder scan saw a regular file)."""
    return key
