"""Values returned by storage operations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import attrs

from .attributes import Metadata


def _metadata(value: Mapping[str, str] | None) -> Metadata | None:
    return value if value is None or isinstance(value, Metadata) else Metadata(value)


@attrs.frozen(slots=True)
class ObjectInfo:
    """What is known of a stored object: key, size in bytes, last change (UTC), etag,
    content type and user metadata.

    ``content_type`` and ``metadata`` are None where the call cannot tell them: in
    listings of S3 (whose listing answers do not carry them) and of ``FsspecStorage``.
    """

    key: str
    size: int
    last_modified: datetime
    etag: str
    content_type: str | None = None
    metadata: Metadata | None = attrs.field(default=None, converter=_metadata)


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
