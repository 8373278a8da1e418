"""Listing helpers every backend may share: where a listing stands, and one-level folding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from .info import CommonPrefix, ObjectInfo

_Entry = TypeVar("_Entry", str, ObjectInfo)


class ListCursor:
    """Where a listing stands: keys up to ``start_after`` and under ``skip_prefix`` are passed."""

    __slots__ = ("skip_prefix", "start_after")

    def __init__(self, start_after: str) -> None:
        self.start_after = start_after
        self.skip_prefix: str | None = None

    def passes_key(self, key: str) -> bool:
        return key <= self.start_after or (self.skip_prefix is not None and key.startswith(self.skip_prefix))

    def passes_range(self, range_prefix: str) -> bool:
        """Whether every key starting with ``range_prefix`` is passed."""
        if self.skip_prefix is not None and range_prefix.startswith(self.skip_prefix):
            return True
        return range_prefix < self.start_after and not self.start_after.startswith(range_prefix)


def fold_levels(
    prefix: str, entries: Iterator[_Entry], cursor: ListCursor
) -> Iterator[_Entry | CommonPrefix]:
    """Fold a sorted stream of objects (infos or keys) into one level below ``prefix``.

    A level is yielded once, if it sorts after ``cursor.start_after`` (so a listing resumes
    after the last entry it yielded). The stream must consult ``cursor`` before each key,
    so that a folded level is skipped instead of read.
    """
    for entry in entries:
        key = entry if isinstance(entry, str) else entry.key
        slash = key.find("/", len(prefix))
        if slash < 0:
            yield entry
        else:
            level = key[: slash + 1]
            cursor.skip_prefix = level
            if level > cursor.start_after:
                yield CommonPrefix(level)
