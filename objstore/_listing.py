"""Listing helpers every backend may share: where a listing stands, and one-level folding."""

from __future__ import annotations

from collections.abc import Iterator

from .info import CommonPrefix, ObjectInfo


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
    prefix: str, infos: Iterator[ObjectInfo], cursor: ListCursor
) -> Iterator[ObjectInfo | CommonPrefix]:
    """Fold a sorted stream of objects into one level below ``prefix``.

    A level is yielded once, if it sorts after ``cursor.start_after`` (so a listing resumes
    after the last entry it yielded). The stream must consult ``cursor`` before each key,
    so that a folded level is skipped instead of read.
    """
    for info in infos:
        slash = info.key.find("/", len(prefix))
        if slash < 0:
            yield info
        else:
            level = info.key[: slash + 1]
            cursor.skip_prefix = level
            if level > cursor.start_after:
                yield CommonPrefix(level)
