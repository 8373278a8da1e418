"""Reads through the fsspec bridge: the default cache, and requests pinned to one version on S3."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from objstore import NotExistError, ObjectChangedError, PrefixedStorage, S3Storage
from objstore._fsspec_cache import MIN_FETCH, SequentialReadahead
from objstore.fsspec import ObjstoreFileSystem
from tests.conftest import S3Endpoint
from tests.faultproxy import FaultProxy, Request, Rule

# -- the default cache ---------------------------------------------------------------------


class Fetcher:
    """The bytes of an object, and a log of the ranges fetched from it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fetched: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start < end <= len(self.data)
        self.fetched.append((start, end))
        return self.data[start:end]


reads = st.lists(st.tuples(st.integers(-5, 5000), st.integers(0, 3000)), max_size=30)


@given(size=st.integers(0, 4000), block=st.integers(1, 2000), ranges=reads)
def test_the_cache_returns_the_bytes_asked_for(size: int, block: int, ranges: list[tuple[int, int]]) -> None:
    fetcher = Fetcher(os.urandom(size))
    cache = SequentialReadahead(block, fetcher, size)
    for start, length in ranges:
        start = max(start, 0)
        assert cache._fetch(start, start + length) == fetcher.data[start : start + length]


@given(
    starts=st.lists(st.integers(0, (8 << 20) - 1), min_size=1, max_size=20, unique=True),
    length=st.integers(MIN_FETCH, 1 << 20),
)
def test_scattered_reads_fetch_only_what_they_ask_for(starts: list[int], length: int) -> None:
    """Reads that do not run on from the kept bytes fetch no byte more than they need."""
    size = 9 << 20
    fetcher = Fetcher(bytes(size))
    cache = SequentialReadahead(5 << 20, fetcher, size)
    asked = []
    for start in starts:
        if cache.start <= start <= cache.end and cache.end > cache.start:
            continue  # runs on: readahead is allowed there
        asked.append((start, min(size, start + length)))
        cache._fetch(start, start + length)
    assert fetcher.fetched == asked


def test_sequential_reads_read_ahead_more_and_more() -> None:
    size, block = 4 << 20, 1 << 20
    fetcher = Fetcher(os.urandom(size))
    cache = SequentialReadahead(block, fetcher, size)
    data = b"".join(cache._fetch(offset, offset + 4096) for offset in range(0, size, 4096))
    assert data == fetcher.data
    lengths = [end - start for start, end in fetcher.fetched]
    # the read, then a readahead doubling from MIN_FETCH up to block_size
    assert lengths[:7] == [MIN_FETCH] + [4096 + (MIN_FETCH << doubled) for doubled in (0, 1, 2, 3, 4, 4)]
    assert block == MIN_FETCH << 4
    assert sum(lengths) == size  # nothing fetched twice, nothing past the end
    assert len(lengths) <= 5 + size // block


def test_a_small_block_size_bounds_every_fetch() -> None:
    fetcher = Fetcher(bytes(1000))
    cache = SequentialReadahead(16, fetcher, 1000)
    cache._fetch(500, 501)
    cache._fetch(501, 502)
    assert fetcher.fetched == [(500, 516)]
    cache._fetch(516, 517)
    assert fetcher.fetched[-1] == (516, 533)  # the readahead never exceeds block_size


# -- one version, on S3 --------------------------------------------------------------------


class RecordingProxy(FaultProxy):
    """The fault proxy, keeping every request it reads."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[Request] = []

    def _choose(self, request: Request) -> Rule | None:
        self.seen.append(request)
        return super()._choose(request)


@pytest.fixture
def recorded(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> Iterator[tuple[RecordingProxy, S3Storage]]:
    """A store of a fresh bucket reached through a proxy that records the requests."""
    if s3_endpoint.secure:
        pytest.skip("the plain-HTTP proxy cannot front a TLS endpoint")
    proxy = RecordingProxy(s3_endpoint.endpoint)
    with proxy:
        storage = S3Storage(
            proxy.endpoint,
            s3_bucket(),
            access_key=s3_endpoint.access_key,
            secret_key=s3_endpoint.secret_key,
            secure=False,
            region=s3_endpoint.region,
        )
        with storage:
            yield proxy, storage


@pytest.mark.parametrize("prefixed", [False, True], ids=["bucket", "prefix"])
def test_every_fetch_is_a_get_pinned_to_the_version_opened(
    recorded: tuple[RecordingProxy, S3Storage], prefixed: bool
) -> None:
    proxy, storage = recorded
    fs = ObjstoreFileSystem(PrefixedStorage(storage, "a/b") if prefixed else storage)
    data = os.urandom(1 << 20)
    fs.pipe("k", data)
    etag = storage.stat("a/b/k" if prefixed else "k").etag
    with fs.open("k", block_size=64 << 10) as file:
        opened = len(proxy.seen)
        assert [request.method for request in proxy.seen[-1:]] == ["HEAD"]  # the one stat, at open
        for offset in (900_000, 10, 500_000):
            file.seek(offset)
            assert file.read(1000) == data[offset : offset + 1000]
        file.seek(0)
        assert file.read() == data
        fetches = proxy.seen[opened:]
    assert fetches and all(request.method == "GET" for request in fetches)  # no HEAD per block
    assert {request.header("If-Match") for request in fetches} == {f'"{etag}"'}
    assert all((request.header("Range") or "").startswith("bytes=") for request in fetches)


def test_a_replaced_object_fails_the_next_fetch(recorded: tuple[RecordingProxy, S3Storage]) -> None:
    proxy, storage = recorded
    fs = ObjstoreFileSystem(storage)
    fs.pipe("k", os.urandom(300_000))
    with fs.open("k", block_size=1000, cache_type="none") as file:
        assert len(file.read(10)) == 10
        storage.write("k", os.urandom(300_000))
        file.seek(200_000)
        with pytest.raises(ObjectChangedError) as caught:
            file.read(10)
    assert caught.value.key == "k"
    assert proxy.seen[-1].method == "GET" and proxy.seen[-1].header("If-Match")  # refused by the server
    with fs.open("k", cache_type="none") as file:
        storage.delete("k")
        with pytest.raises(NotExistError):
            file.read(10)
