"""Downloads to local files: a temporary file beside the target, renamed over it once complete."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .errors import InvalidArgumentError, ObjectChangedError, ObjstoreError, StorageIOError
from .info import ObjectInfo

#: How many bytes the base implementation copies at a time.
COPY_CHUNK = 1 << 20
#: Attempts at a temporary name that no file has yet (names are random: one is the rule).
_NAME_TRIES = 16


def target_path(path: object) -> str:
    """``path`` as a ``str`` path, or ``InvalidArgumentError``."""
    try:
        target = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidArgumentError(f"path is a str or os.PathLike path, not {path!r}") from None
    if not isinstance(target, str) or not target:
        raise InvalidArgumentError(f"path is a non-empty str or os.PathLike of str, not {path!r}")
    return target


@contextlib.contextmanager
def _local_errors(what: str) -> Iterator[None]:
    """Local ``OSError`` as :class:`StorageIOError` (objstore's own errors pass)."""
    try:
        yield
    except ObjstoreError:
        raise
    except OSError as exc:
        raise StorageIOError(exc.errno, f"{what}: {exc.strerror or exc}", exc.filename) from exc


def download_to(path: str, fill: Callable[[int], ObjectInfo], *, replace: bool = True) -> ObjectInfo:
    """Run ``fill`` on the descriptor of a new temporary file (read-write, empty) in ``path``'s
    folder, then rename that file to ``path``; return what ``fill`` returned.

    With ``replace=False`` the file is linked to ``path`` only if nothing is there, else
    ``FileExistsError``. On any failure the temporary file is removed and ``path`` is left
    as it was.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = _create_temporary(folder, name)
    try:
        with _local_errors(f"cannot write {temporary!r}"):
            info = fill(fd)
        with _local_errors(f"cannot close {temporary!r}"):
            os.close(fd)
            fd = -1
        if replace:
            with _local_errors(f"cannot rename the download to {path!r}"):
                os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise  # the caller's condition failed: it says so in its own words
            except OSError as exc:
                raise StorageIOError(exc.errno, f"cannot link the download to {path!r}") from exc
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return info


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file ``.<name>.<random>.download`` in ``folder``: its descriptor and path."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_TRIES):
        temporary = os.path.join(folder, f".{name[:200]}.{secrets.token_hex(6)}.download")
        try:
            with _local_errors(f"cannot create a temporary file in {folder!r}"):
                return os.open(temporary, flags, 0o666), temporary
        except StorageIOError as exc:
            if not isinstance(exc.__cause__, FileExistsError):
                raise
    raise StorageIOError(errno.EEXIST, f"no free temporary name in {folder!r} after {_NAME_TRIES} tries")


def copy_stream(key: str, stream: BinaryIO, fd: int, size: int) -> int:
    """Copy ``stream`` to ``fd`` from offset 0, up to one chunk past ``size`` bytes; how many."""
    offset = 0
    for _ in range(size // COPY_CHUNK + 2):  # one more read finds the end, or a longer object
        chunk = stream.read(COPY_CHUNK)
        if not chunk:
            break
        write_at(fd, memoryview(chunk), offset, key)
        offset += len(chunk)
    return offset


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd`` (``os.pwrite`` may write less)."""
    for _ in range(len(data) + 1):
        if not data:
            return
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
    raise StorageIOError(errno.EIO, f"cannot write {len(data)} bytes at offset {offset}")


def write_at(fd: int, data: memoryview, offset: int, key: str) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``; a local failure is :class:`StorageIOError`."""
    with _local_errors(f"cannot write the download of {key!r}"):
        _write_all(fd, data, offset)


def read_at(fd: int, count: int, offset: int, key: str) -> bytes:
    """``count`` bytes at ``offset`` of ``fd`` (fewer only past its end)."""
    with _local_errors(f"cannot read back the download of {key!r}"):
        return os.pread(fd, count, offset)


def resize(fd: int, size: int, key: str) -> None:
    """Empty the file, then give it ``size`` bytes (zeros, sparse where the system can)."""
    with _local_errors(f"cannot size the download of {key!r}"):
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)


def copy_version(
    key: str, stat: Callable[[], ObjectInfo], open_stream: Callable[[], BinaryIO], fd: int
) -> ObjectInfo:
    """The base download: ``stat``, copy the stream to ``fd``, ``stat`` again; the info of the
    version copied, or ``ObjectChangedError`` if the object changed meanwhile."""
    before = stat()
    with open_stream() as stream:
        copied = copy_stream(key, stream, fd, before.size)
    after = stat()
    if after.etag != before.etag or copied != before.size:
        raise ObjectChangedError(key, before.etag)
    return before
