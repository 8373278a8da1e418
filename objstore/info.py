"""Values returned by storage operations."""

from __future__ import annotations

from datetime import datetime

import attrs


@attrs.frozen(slots=True)
class ObjectInfo:
    """What is known of a stored object: key, size in bytes, last change (UTC), etag."""

    key: str
    size: int
    last_modified: datetime
    etag: str


@attrs.frozen(slots=True)
class CommonPrefix:
    """A level below the listed prefix, shown by a one-level listing; ``key`` ends with "/"."""

    key: str


@attrs.frozen(slots=True)
class CleanupResult:
    """What :meth:`Storage.cleanup` removed: temporary files and empty folders (posix),
    unfinished multipart uploads (s3)."""

    temporaries: int = 0
    folders: int = 0
    uploads: int = 0
