"""The fsspec bridge's default read cache: exact fetches where reads jump, readahead where they run on."""

from __future__ import annotations

from collections.abc import Callable

from fsspec.caching import BaseCache, register_cache

#: The least a fetch asks for (unless ``block_size`` is smaller): the first readahead too.
MIN_FETCH = 64 << 10


class SequentialReadahead(BaseCache):  # type: ignore[misc]  # fsspec has no types
    """fsspec's cache ``"objstore-readahead"``: one run of fetched bytes, kept until the next fetch.

    A read that starts elsewhere than in or right after the kept run fetches what it asks
    for (at least :data:`MIN_FETCH`), so scattered large reads, such as a columnar
    reader's column chunks, move no byte more than they need. A read that runs on past
    the kept run fetches ahead of it too: :data:`MIN_FETCH` at first, doubling with each
    such fetch up to ``block_size``, so a sequential reader makes few requests.
    """

    name = "objstore-readahead"

    def __init__(self, blocksize: int, fetcher: Callable[[int, int], bytes], size: int) -> None:
        super().__init__(blocksize, fetcher, size)
        self.cache = b""
        self.start = 0
        self.end = 0
        self.ahead = 0  # the readahead of the last fetch
        self.least = max(1, min(blocksize, MIN_FETCH))

    def _fetch(self, start: int | None, end: int | None) -> bytes:
        start = start or 0
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return b""
        if self.start <= start and end <= self.end:
            self.hit_count += 1
            return self.cache[start - self.start : end - self.start]
        self.miss_count += 1
        if self.start < self.end and self.start <= start <= self.end:  # runs on from the kept bytes
            part = self.cache[start - self.start :]
            first = self.end
            self.ahead = min(self.blocksize, max(2 * self.ahead, self.least))
        else:
            part = b""
            first = start
            self.ahead = 0
        last = min(self.size, max(end + self.ahead, first + self.least))
        self.total_requested_bytes += last - first
        self.cache = self.fetcher(first, last)
        self.start, self.end = first, first + len(self.cache)
        return part + self.cache[: end - first]


register_cache(SequentialReadahead)
