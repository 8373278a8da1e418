"""Whole objects read with parallel ranged GETs (``read_bytes`` and ``download`` on S3): the
same bytes at every size, one version, bounded concurrency, faults, and one GET for small objects."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import IntegrityError, ObjectChangedError, RemoteError, S3Storage, StorageIOError
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, InFlight, Rule

PART = 5 << 20
Factory = Callable[..., S3Storage]


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes in which a shifted or mixed-up range shows."""
    block = os.urandom(1) + bytes((index * 31 + seed) % 256 for index in range(4093))
    return (block * (size // len(block) + 1))[:size]


def requests_seen(proxy: FaultProxy) -> int:
    """How many requests the proxy has seen so far."""
    return proxy.requests


# -- the same bytes, at every size -----------------------------------------------------------

SIZES = st.one_of(
    st.builds(lambda parts, delta: max(0, parts * PART + delta), st.integers(0, 3), st.integers(-2, 2)),
    st.integers(0, 3 * PART + 5),
)


@pytest.fixture(scope="module")
def shared_bucket(s3_endpoint: S3Endpoint) -> Iterator[str]:
    """One bucket for the hypothesis examples (a bucket each would cost more than the reads)."""
    client = s3_endpoint.client()
    name = f"objstore-test-download-{os.getpid()}"
    client.make_bucket(name)
    yield name
    with s3_endpoint.storage(name) as storage:
        storage.delete_many(entry.key for entry in storage.list())
    client.remove_bucket(name)


@settings(max_examples=15)
@given(size=SIZES, concurrency=st.integers(2, 4))
def test_read_bytes_and_download_return_the_object_at_every_size(
    s3_endpoint: S3Endpoint,
    shared_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    concurrency: int,
) -> None:
    s3 = s3_endpoint.storage(shared_bucket, part_size=PART, max_concurrency=concurrency)
    data = pattern(size, concurrency)
    s3.write("object", data)
    assert s3.read_bytes("object") == data
    target = tmp_path_factory.mktemp("download") / "file"
    info = s3.download("object", target)
    assert target.read_bytes() == data
    assert info == s3.stat("object")
    assert os.listdir(target.parent) == ["file"]


@pytest.mark.parametrize(
    ("written_part", "size"),
    [(16 << 20, 12 << 20), (6 << 20, 17 << 20)],
    ids=["single-part-md5-over-3-ranges", "6MiB-parts-over-5MiB-ranges"],
)
def test_the_whole_object_digest_is_checked_over_ranges_of_another_size(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], tmp_path: Path, written_part: int, size: int
) -> None:
    bucket = s3_bucket()
    writer = s3_endpoint.storage(bucket, part_size=written_part)
    reader = s3_endpoint.storage(bucket, part_size=PART, max_concurrency=3)
    data = pattern(size)
    etag = writer.write("object", data)
    assert ("-" in etag) == (size > written_part)
    assert reader.read_bytes("object") == data
    assert reader.download("object", tmp_path / "file").etag == etag
    assert (tmp_path / "file").read_bytes() == data


# -- requests: one GET for a small object -------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "gets"),
    [(1, 1), (1000, 1), (PART, 1), (PART + 1, 2), (3 * PART + 7, 4), (0, 2)],
    ids=["1B", "1000B", "one-part", "part+1", "3-parts+7", "empty"],
)
def test_a_small_object_takes_one_get_and_a_large_one_a_get_per_range(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path, size: int, gets: int
) -> None:
    """An empty object has no byte for a range: its ranged GET is refused (416), a plain GET follows."""
    s3 = proxied_storage(part_size=PART, max_concurrency=4)
    data = pattern(size)
    s3.write("object", data)
    before = requests_seen(fault_proxy)
    assert s3.read_bytes("object") == data
    assert requests_seen(fault_proxy) - before == gets
    before = requests_seen(fault_proxy)
    s3.download("object", tmp_path / "file")
    assert requests_seen(fault_proxy) - before == gets
    assert (tmp_path / "file").read_bytes() == data


def test_max_concurrency_1_reads_with_one_get(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3 = proxied_storage(part_size=PART, max_concurrency=1)
    data = pattern(3 * PART + 7)
    s3.write("object", data)
    before = requests_seen(fault_proxy)
    assert s3.read_bytes("object") == data
    info = s3.download("object", tmp_path / "file")
    assert requests_seen(fault_proxy) - before == 2  # one plain GET each
    assert (tmp_path / "file").read_bytes() == data and info == s3.stat("object")


# -- ranges in flight ---------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [2, 4])
@pytest.mark.parametrize("how", ["read_bytes", "download"])
def test_up_to_max_concurrency_ranges_are_in_flight(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path, concurrency: int, how: str
) -> None:
    fault_proxy.stall_limit = 0.01
    s3 = proxied_storage(part_size=PART, max_concurrency=concurrency)
    data = pattern(8 * PART)
    s3.write("object", data)
    in_flight = InFlight(concurrency)
    fault_proxy.plan(Rule(Fault.STALL_HEADERS, method="GET", has_header="If-Match", then=in_flight))
    if how == "read_bytes":
        assert s3.read_bytes("object") == data
    else:
        s3.download("object", tmp_path / "file")
        assert (tmp_path / "file").read_bytes() == data
    print(f"\n{how}, max_concurrency={concurrency}: at most {in_flight.most} ranged GETs in flight")
    assert in_flight.seen == 7  # every range after the first carries If-Match
    assert in_flight.most == concurrency


# -- one version ------------------------------------------------------------------------------


def replace_on_first_range(
    s3_endpoint: S3Endpoint, s3: S3Storage, fault_proxy: FaultProxy, new: bytes
) -> None:
    """Plan: the first GET (of the first range) is answered by the server, then the object is
    replaced before the client hears the answer: every later range request (``If-Match``
    on the first answer's etag) finds the new version."""
    direct = s3_endpoint.storage(s3.bucket, part_size=PART)
    fault_proxy.stall_limit = 0.01
    fault_proxy.plan(
        Rule(Fault.STALL_HEADERS, method="GET", times=1, then=lambda: direct.write("object", new))
    )


def test_an_object_replaced_during_a_download_raises_and_leaves_the_file(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    s3 = proxied_storage(part_size=PART, max_concurrency=2)
    s3.write("object", pattern(6 * PART, 1))
    replace_on_first_range(s3_endpoint, s3, fault_proxy, pattern(6 * PART, 2))
    target = tmp_path / "file"
    target.write_bytes(b"the file before")
    with pytest.raises(ObjectChangedError):
        s3.download("object", target)
    assert target.read_bytes() == b"the file before"
    assert os.listdir(tmp_path) == ["file"]


def test_read_bytes_reads_a_replaced_object_again_whole(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(part_size=PART, max_concurrency=2, backoff=0.01)
    s3.write("object", pattern(6 * PART, 1))
    new = pattern(6 * PART + 3, 2)
    replace_on_first_range(s3_endpoint, s3, fault_proxy, new)
    assert s3.read_bytes("object") == new  # never a mix of the two
    strict = S3Storage(
        fault_proxy.endpoint,
        s3.bucket,
        access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key,
        secure=False,
        region=s3_endpoint.region,
        part_size=PART,
        max_concurrency=2,
        retries=0,
    )
    replace_on_first_range(s3_endpoint, s3, fault_proxy, pattern(6 * PART, 3))
    with pytest.raises(ObjectChangedError):
        strict.read_bytes("object")


# -- faults -------------------------------------------------------------------------------------

FAULTS = [Fault.STATUS_503, Fault.RESET, Fault.CUT, Fault.CUT_CONSISTENT, Fault.GARBLE]


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
@pytest.mark.parametrize("which", ["first", "ranged"])
def test_a_faulty_answer_is_read_again(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path, fault: Fault, which: str
) -> None:
    s3 = proxied_storage(part_size=PART, max_concurrency=3, backoff=0.01)
    data = pattern(4 * PART + 11)
    s3.write("object", data)
    header = "If-Match" if which == "ranged" else "Range"  # the first GET has no If-Match
    for how in ("read_bytes", "download"):
        skip = 1 if which == "ranged" else 0
        fault_proxy.plan(Rule(fault, method="GET", has_header=header, skip=skip, times=1))
        if how == "read_bytes":
            assert s3.read_bytes("object") == data
        else:
            target = tmp_path / "file"
            s3.download("object", target)
            assert target.read_bytes() == data
        assert fault_proxy.counts()[fault.name] >= 1
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
def test_a_fault_without_retries_is_a_typed_error_never_short_data(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path, fault: Fault
) -> None:
    s3 = proxied_storage(part_size=PART, max_concurrency=3, retries=0, timeout=10)
    data = pattern(4 * PART + 11)
    s3.write("object", data)
    target = tmp_path / "file"
    target.write_bytes(b"before")
    fault_proxy.plan(Rule(fault, method="GET", has_header="If-Match"))
    with pytest.raises((RemoteError, IntegrityError)):
        s3.read_bytes("object")
    with pytest.raises((RemoteError, IntegrityError)):
        s3.download("object", target)
    assert target.read_bytes() == b"before"
    assert os.listdir(tmp_path) == ["file"]


def test_a_download_to_a_missing_folder_is_a_storage_io_error_and_sends_nothing(
    proxied_storage: Factory, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3 = proxied_storage(part_size=PART)
    s3.write("object", b"x")
    before = requests_seen(fault_proxy)
    with pytest.raises(StorageIOError):
        s3.download("object", tmp_path / "missing" / "file")
    assert requests_seen(fault_proxy) == before


# -- memory ---------------------------------------------------------------------------------------


def test_a_download_holds_chunks_of_the_ranges_in_flight_not_the_object(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], tmp_path: Path
) -> None:
    s3 = s3_endpoint.storage(s3_bucket(), part_size=PART, max_concurrency=4)
    size = 16 * PART
    s3.write("big", (pattern(PART, part) for part in range(16)))
    tracemalloc.start()
    try:
        info = s3.download("big", tmp_path / "file")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n16 ranges of 5 MiB, max_concurrency=4: peak {peak / (1 << 20):.1f} MiB traced")
    assert info.size == size and (tmp_path / "file").stat().st_size == size
    assert peak < 4 * 3 << 20  # a few MiB per range in flight, not 80 MiB
