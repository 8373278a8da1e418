"""Copies of one object or file between locations, and the objects under a folder location."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

import attrs

from .._download import COPY_CHUNK, copy_stream, download_to
from ..errors import AlreadyExistsError, IntegrityError, InvalidKeyError, ObjectChangedError
from ..info import ObjectInfo
from .failures import CommandError
from .locations import LocalLocation, Location, StoreLocation
from .progress import Progress, Tally


@attrs.frozen
class Entry:
    """An object or file found under a folder location: where it is, its size, its last
    change, and, for a store object, its info as listed."""

    location: Location
    size: int
    modified: datetime
    info: ObjectInfo | None = None


#: The failures of a whole copy that another attempt may not meet: a body that failed its
#: check, an object replaced while it was read.
_TRANSIENT = (IntegrityError, ObjectChangedError)
#: How many times a copy is attempted, where it can start over (no stdin, no stdout).
ATTEMPTS = 3


def copy_object(
    src: Location,
    dst: Location,
    progress: Progress,
    *,
    no_clobber: bool = False,
    info: ObjectInfo | None = None,
) -> str:
    """Copy one object or file from ``src`` to ``dst`` (``no_clobber``: only if ``dst`` is
    missing, atomically); the verb that says what was done. ``info`` is what is known of a
    store object already (from a listing or a ``stat``), so it is not asked for again.

    A copy that fails half-way stores nothing, so one that met a transient failure starts
    over, asking afresh.
    """
    again = not any(isinstance(end, LocalLocation) and end.is_stdio for end in (src, dst))
    for attempt in range(1, ATTEMPTS + 1):
        tally = progress.tally()
        try:
            return _copy(src, dst, tally, no_clobber, info if attempt == 1 else None)
        except _TRANSIENT:
            tally.take_back()
            if not again or attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _copy(src: Location, dst: Location, tally: Tally, no_clobber: bool, info: ObjectInfo | None) -> str:
    if isinstance(src, LocalLocation):
        if not isinstance(dst, StoreLocation):
            raise CommandError(src.path, "a copy has a store URL on at least one side")
        _upload(src, dst, tally, no_clobber)
        return "upload"
    if isinstance(dst, LocalLocation):
        _download(src, dst, tally, no_clobber, info or src.store.stat(src.key))
        return "download"
    if dst.store_id == src.store_id and not no_clobber:
        dst.store.copy(src.key, dst.key)  # on the server, in one step, where the backend can
        tally.advance(info.size if info else 0)
        return "copy"
    keeps = src.store.supports_metadata and dst.store.supports_metadata
    if info is None or (keeps and info.content_type is None):  # (S3's listings carry no attributes)
        info = src.store.stat(src.key)
    with src.store.read(src.key, if_match=info.etag) as stream:
        dst.store.write(
            dst.key,
            tally.reader(stream),
            size=info.size,
            if_none_match=no_clobber,
            content_type=info.content_type if keeps else None,
            metadata=info.metadata if keeps else None,
        )
    return "copy"


def _upload(src: LocalLocation, dst: StoreLocation, tally: Tally, no_clobber: bool) -> None:
    content_type = None if src.is_stdio else mimetypes.guess_type(src.path)[0]
    if not dst.store.supports_metadata:
        content_type = None
    if src.is_stdio:
        _write(dst, sys.stdin.buffer, None, tally, no_clobber, content_type)
        return
    with open(src.path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        _write(dst, file, size, tally, no_clobber, content_type)


def _write(
    dst: StoreLocation,
    stream: BinaryIO,
    size: int | None,
    tally: Tally,
    no_clobber: bool,
    content_type: str | None,
) -> None:
    dst.store.write(
        dst.key, tally.reader(stream), size=size, if_none_match=no_clobber, content_type=content_type
    )


def _download(
    src: StoreLocation, dst: LocalLocation, tally: Tally, no_clobber: bool, info: ObjectInfo
) -> None:
    if dst.is_stdio:
        out = sys.stdout.buffer
        for chunk in read_chunks(src, info, tally):
            out.write(chunk)
        out.flush()
        return

    def fill(fd: int) -> ObjectInfo:
        with src.store.read(src.key, if_match=info.etag) as stream:
            copied = copy_stream(src.key, tally.reader(stream), fd, info.size)
        if copied != info.size:
            raise ObjectChangedError(src.key, info.etag)
        return info

    os.makedirs(os.path.dirname(os.path.abspath(dst.path)), exist_ok=True)
    try:
        download_to(dst.path, fill, replace=not no_clobber)
    except FileExistsError:
        raise AlreadyExistsError(dst.path) from None
    stamp = int(info.last_modified.timestamp() * 1e9)
    os.utime(dst.path, ns=(stamp, stamp))  # as the object's: what sync compares


def read_chunks(
    src: StoreLocation, info: ObjectInfo, tally: Tally | None, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of the version ``info`` of the object, in chunks (counted
    on ``tally``, if given)."""
    with src.store.read(src.key, start=start, end=end, if_match=info.etag) as stream:
        for _ in range(info.size // COPY_CHUNK + 2):  # one more read finds the end
            chunk = stream.read(COPY_CHUNK)
            if not chunk:
                return
            if tally is not None:
                tally.advance(len(chunk))
            yield chunk


# -- folders ----------------------------------------------------------------------------


def entries(folder: Location) -> dict[str, Entry]:
    """The objects or files under a folder location, by key relative to it.

    A store's keys ending with "/" (folder markers) are left out; local links are followed
    to files, never into folders.
    """
    found: dict[str, Entry] = {}
    if isinstance(folder, StoreLocation):
        prefix = folder.folder()
        for info in folder.store.list(prefix):
            relative = info.key[len(prefix) :]
            if isinstance(info, ObjectInfo) and not relative.endswith("/"):
                found[relative] = Entry(folder.at(info.key), info.size, info.last_modified, info)
        return found
    if not os.path.isdir(folder.path):
        raise CommandError(folder.path, "not a folder")
    for dirpath, dirnames, filenames in os.walk(folder.path):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode):
                relative = os.path.relpath(path, folder.path).replace(os.sep, "/")
                modified = datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)
                found[relative] = Entry(LocalLocation(path), st.st_size, modified)
    return found


def child(folder: Location, relative: str) -> Location:
    """The location of the key ``relative`` under a folder location.

    A local one must stay inside the folder: ``InvalidKeyError`` for an empty, "." or
    ".." segment, or a link on the way.
    """
    if isinstance(folder, StoreLocation):
        return folder.at(folder.folder() + relative)
    names = relative.split("/")
    if any(name in ("", ".", "..") for name in names) or "\0" in relative:
        raise InvalidKeyError(relative, f"it has no path inside the folder {folder.path!r}")
    path = folder.path
    for name in names:
        path = os.path.join(path, name)
        if os.path.islink(path):
            raise InvalidKeyError(relative, f"its path in {folder.path!r} goes through the link {path!r}")
    return LocalLocation(path)


def digest(entry: Entry) -> Callable[[], str] | None:
    """How to learn the MD5 of an entry's content, if it can be known without a download:
    an S3 etag without "-" is one; a local file or posix object is read. None otherwise."""
    location = entry.location
    if isinstance(location, StoreLocation) and location.store_id[0] == "s3":
        etag = entry.info.etag if entry.info is not None else ""
        return (lambda: etag) if len(etag) == 32 and "-" not in etag else None
    return lambda: _md5(location)


def _md5(location: Location) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    if isinstance(location, StoreLocation):
        with location.store.read(location.key) as stream:
            for chunk in iter(lambda: stream.read(COPY_CHUNK), b""):
                md5.update(chunk)
    else:
        with open(location.path, "rb") as file:
            for chunk in iter(lambda: file.read(COPY_CHUNK), b""):
                md5.update(chunk)
    return md5.hexdigest()


def differs(src: Entry, dst: Entry) -> bool:
    """Whether ``dst`` is not a copy of ``src``: its size differs; else their MD5s differ
    where both can be known; else ``src`` changed after ``dst``, in whole seconds (S3's)."""
    if src.size != dst.size:
        return True
    src_digest, dst_digest = digest(src), digest(dst)
    if src_digest is not None and dst_digest is not None:
        return src_digest() != dst_digest()
    return src.modified.replace(microsecond=0) > dst.modified.replace(microsecond=0)
