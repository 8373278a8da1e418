"""An object file's content type and metadata, kept in one extended attribute of the file.

The attribute is set on the temporary file before it is renamed into place, so the
attributes and the bytes of a version appear together. A file that has it is marked
with the sticky bit (which Linux ignores on regular files), so that a listing, which
stats every file anyway, reads the attribute only of the files that have one; a file
without the mark has the default attributes. The value is the content type, then one ``key=value`` line per
metadata entry (the rules of :mod:`objstore.attributes` keep "=" out of keys and line
breaks out of both).
"""

from __future__ import annotations

import errno
import os
import stat

from .attributes import DEFAULT_ATTRIBUTES, Attributes, Metadata
from .errors import StorageIOError, UnsupportedError

NAME = "user.objstore.attributes"

#: Whether this platform has extended attributes at all (Linux).
AVAILABLE = hasattr(os, "setxattr")

_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP})


def encode(attributes: Attributes) -> bytes:
    """The attribute value for ``attributes``."""
    lines = [attributes.content_type, *(f"{key}={value}" for key, value in attributes.metadata.items())]
    return "\n".join(lines).encode("ascii")


def decode(key: str, raw: bytes) -> Attributes:
    """The attributes an attribute value gives; ``StorageIOError`` if it is not one."""
    try:
        content_type, *lines = raw.decode("ascii").split("\n")
        return Attributes(content_type, Metadata(dict(line.split("=", 1) for line in lines)))
    except ValueError as exc:  # (UnicodeDecodeError included)
        raise StorageIOError(errno.EIO, f"the attributes of {key!r} are unreadable ({raw[:60]!r})") from exc


def store(fd: int, attributes: Attributes, where: str) -> None:
    """Set ``attributes`` on the open file ``fd`` (nothing for the default ones).

    ``UnsupportedError`` names ``where`` if its filesystem has no extended attributes.
    """
    if attributes.is_default:
        return
    if not AVAILABLE:
        raise UnsupportedError(f"{where} cannot keep a content type or metadata: no extended attributes here")
    try:
        os.setxattr(fd, NAME, encode(attributes))
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_ISVTX)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise UnsupportedError(
                f"the filesystem of {where} cannot keep a content type or metadata"
                f" (extended attributes: {exc.strerror})"
            ) from exc
        raise


def marked(st: os.stat_result) -> bool:
    """Whether the file whose stat is ``st`` has attributes of its own."""
    return bool(st.st_mode & stat.S_ISVTX)


def load(key: str, fd: int, st: os.stat_result) -> Attributes:
    """The attributes of the open object file ``fd``, whose stat is ``st``."""
    if not (AVAILABLE and marked(st)):
        return DEFAULT_ATTRIBUTES
    try:
        raw = os.getxattr(fd, NAME)
    except OSError as exc:
        if exc.errno == errno.ENODATA or exc.errno in _UNSUPPORTED:
            return DEFAULT_ATTRIBUTES
        raise
    return decode(key, raw)
