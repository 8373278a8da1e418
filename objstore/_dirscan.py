"""Sorted, memory-bounded listing of one directory."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

#: A pass over a directory yields at most this many names (and holds at most twice as
#: many); larger directories are read in several passes, each resuming after the last
#: name yielded.
MAX_NAMES_PER_PASS = 100_000
_BLOCK = 1024  # directory entries read at once (the names are kept, the entries dropped)

SortKey = Callable[[os.DirEntry[str]], "str | None"]


def sorted_entries(
    dir_fd: int,
    sort_key: SortKey,
    wanted: Callable[[str], bool] | None,
    limit: int | None = None,
) -> Iterator[str]:
    """Yield the sort keys of a directory's wanted entries in increasing order.

    ``sort_key`` maps an entry to its sort key, or None to leave it out; ``wanted``, if
    given, filters the sort keys. Memory is bounded by ``limit`` names (twice as many at
    most) whatever the directory's size.
    """
    limit = limit or MAX_NAMES_PER_PASS
    after: str | None = None
    while True:
        batch: list[str] = []
        cutoff: str | None = None
        with os.scandir(dir_fd) as entries:
            while block := list(itertools.islice(entries, min(limit, _BLOCK))):
                keys = [key for key in map(sort_key, block) if key is not None]
                if after is not None:
                    keys = [key for key in keys if key > after]
                if cutoff is not None:
                    keys = [key for key in keys if key < cutoff]
                batch += keys if wanted is None else filter(wanted, keys)
                if len(batch) >= 2 * limit:
                    batch.sort()
                    del batch[limit:]
                    cutoff = batch[-1]
        batch.sort()
        full = cutoff is not None or len(batch) > limit  # names were dropped: read again
        del batch[limit:]
        yield from batch
        if not full:
            return
        after = batch[-1]
