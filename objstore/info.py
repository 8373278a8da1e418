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
