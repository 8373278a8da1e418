"""Several ranges of one S3 object: near ones merged into one GET, the GETs run concurrently."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import IntegrityError, ObjectChangedError
from .body import ObjectReader

if TYPE_CHECKING:
    from .storage import S3Storage

#: Ranges less than this far apart are fetched by one GET (the bytes between are dropped).
MERGE_GAP = 64 << 10
#: At most this many GETs of one ``read_ranges`` run at once.
RANGE_THREADS = 8


def merge(ranges: list[tuple[int, int]], gap: int = MERGE_GAP) -> list[tuple[int, int]]:
    """The non-empty ranges, sorted, with those less than ``gap`` apart (or overlapping) merged."""
    spans: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if spans and start < spans[-1][1] + gap:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def read_ranges(storage: S3Storage, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each range, all of one version; a version replaced meanwhile is read again."""
    spans = merge(ranges)
    if not spans:
        storage._stat(key)  # NotExistError if missing
        return [b"" for _ in ranges]
    for last in storage._tries():
        try:
            return _fetch(storage, key, ranges, spans)
        except (IntegrityError, ObjectChangedError):
            if last:
                raise
    raise AssertionError("unreachable")


def _fetch(
    storage: S3Storage, key: str, ranges: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[bytes]:
    with contextlib.closing(ObjectReader.open(storage, key, *spans[0])) as first:
        data = [first.readall()]
    etag = first.etag or None

    def fetch(span: tuple[int, int]) -> bytes:
        with contextlib.closing(ObjectReader.open(storage, key, *span, if_match=etag)) as reader:
            return reader.readall()

    if len(spans) > 1:
        workers = min(RANGE_THREADS, len(spans) - 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="objstore-s3-range") as pool:
            data.extend(pool.map(fetch, spans[1:]))
    parts = []
    for start, end in ranges:
        if start >= end:
            parts.append(b"")
            continue
        index = max(i for i, span in enumerate(spans) if span[0] <= start)
        parts.append(data[index][start - spans[index][0] : end - spans[index][0]])
    return parts
