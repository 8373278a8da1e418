"""Ranged reads and seekable streams: the same rules on every backend, few bytes moved on S3."""

from __future__ import annotations

import io
import os

import fsspec
import pytest

from objstore import InvalidArgumentError, MemoryStorage, NotExistError, ObjectChangedError, Storage
from objstore.fsspec import ObjstoreFileSystem
from objstore.s3.ranges import MERGE_GAP, merge
from tests.conftest import ProxiedStorageFactory
from tests.faultproxy import Fault, FaultProxy, Rule

DATA = bytes(range(256)) * 4
RANGES = [(0, 0), (0, 1), (0, 1024), (0, 5000), (3, 17), (1000, 1024), (1023, 2000), (1024, 2000)]
RANGES += [(2000, 3000), (10, 5)]  # past the end, and end before start: empty


@pytest.mark.parametrize(("start", "end"), [*RANGES, (0, None), (700, None), (5000, None)])
def test_reads_follow_slice_rules(storage: Storage, start: int, end: int | None) -> None:
    storage.write("k", DATA)
    storage.write("empty", b"")
    with storage.read("k", start=start, end=end) as stream:
        assert stream.read() == DATA[start:end]
    with storage.read("empty", start=start, end=end) as stream:
        assert stream.read() == b""
    if end is not None:
        assert storage.read_range("k", start, end) == DATA[start:end]


def test_read_ranges_of_one_version(storage: Storage) -> None:
    storage.write("k", DATA)
    assert storage.read_ranges("k", RANGES) == [DATA[start:end] for start, end in RANGES]
    assert storage.read_ranges("k", []) == []
    for call in (
        lambda: storage.read_range("missing", 0, 10),
        lambda: storage.read_range("missing", 5, 5),
        lambda: storage.read_ranges("missing", [(0, 1), (2, 3)]),
        lambda: storage.read("missing", start=3),
    ):
        with pytest.raises(NotExistError):
            call()


@pytest.mark.parametrize(
    ("start", "end", "named"), [(-1, None, "start"), (0, -5, "end"), (True, 3, "start"), (0.5, 3, "start")]
)
def test_negative_or_odd_offsets_are_refused(
    storage: Storage, start: object, end: object, named: str
) -> None:
    storage.write("k", DATA)
    with pytest.raises(InvalidArgumentError, match=f"{named} .*{end if named == 'end' else start}"):
        storage.read("k", start=start, end=end)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=named):
        storage.read_ranges("k", [(0, 1), (start, 5 if end is None else end)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="tuple"):
        storage.read_ranges("k", [[0, 1]])  # type: ignore[list-item]


def test_streams_seek(storage: Storage) -> None:
    storage.write("k", DATA)
    with storage.read("k") as stream:
        assert stream.seekable()
        assert stream.read(10) == DATA[:10]
        assert stream.seek(900) == 900 and stream.read(10) == DATA[900:910]
        assert stream.seek(-20, io.SEEK_CUR) == 890 and stream.read(5) == DATA[890:895]
        assert stream.seek(5) == 5 and stream.read(3) == DATA[5:8] and stream.tell() == 8
        assert stream.seek(-4, io.SEEK_END) == 1020 and stream.read() == DATA[1020:]
        assert stream.seek(2000) == 2000 and stream.read() == b""
        with pytest.raises(InvalidArgumentError):
            stream.seek(-1)
    with storage.read("k", start=100, end=300) as stream:  # position 0 is byte 100
        assert stream.read(4) == DATA[100:104]
        assert stream.seek(0, io.SEEK_END) == 200
        assert stream.seek(150) == 150 and stream.read() == DATA[250:300]
        assert stream.seek(0) == 0 and stream.read() == DATA[100:300]


def test_merge_joins_near_ranges() -> None:
    assert merge([(0, 10), (10 + MERGE_GAP - 1, 10 + MERGE_GAP), (5, 8), (1 << 30, 1 << 30)]) == [
        (0, 10 + MERGE_GAP)
    ]
    assert merge([(0, 10), (10 + MERGE_GAP, 11 + MERGE_GAP)]) == [(0, 10), (10 + MERGE_GAP, 11 + MERGE_GAP)]


def test_fsspec_ranges() -> None:
    fs = ObjstoreFileSystem(MemoryStorage())
    fs.pipe_file("a", DATA)
    fs.pipe_file("b", b"0123456789")
    assert fs.cat_file("a", 10, 20) == DATA[10:20]
    assert fs.cat_file("a", -10) == DATA[-10:] and fs.cat_file("a", 5, -1020) == b""
    got = fs.cat_ranges(["a", "b", "a", "missing"], [0, 2, 1000, 0], [4, None, 1030, 1])
    assert got[:3] == [DATA[:4], b"23456789", DATA[1000:1030]]
    assert isinstance(got[3], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        fs.cat_ranges(["missing"], 0, 1, on_error="raise")
    with fs.open("a", "rb", block_size=64, cache_type="bytes") as file:
        file.seek(500)
        assert file.read(8) == DATA[500:508]
        file.seek(3)
        assert file.read(2) == DATA[3:5]


# -- S3 -------------------------------------------------------------------------------

MiB = 1 << 20


def _object(size: int) -> bytes:
    return os.urandom(size)


def test_s3_seek_asks_for_a_range_of_the_same_version(
    fault_proxy: FaultProxy, proxied_storage: ProxiedStorageFactory
) -> None:
    storage = proxied_storage()
    data = _object(3 * MiB)
    storage.write("k", data)
    with storage.read("k") as stream:
        assert stream.read(10) == data[:10]
        before = fault_proxy.body_bytes
        stream.seek(int(2.5 * MiB))
        assert stream.read(10) == data[int(2.5 * MiB) : int(2.5 * MiB) + 10]
        assert fault_proxy.body_bytes - before == MiB // 2  # the rest, from 2.5 MiB: never from 0
    with storage.read("k") as stream:
        stream.read(10)
        storage.write("k", b"replaced")
        stream.seek(int(2.5 * MiB))
        with pytest.raises(ObjectChangedError):
            stream.read(10)


def test_s3_ranged_reads_are_checked_and_resume(
    fault_proxy: FaultProxy, proxied_storage: ProxiedStorageFactory
) -> None:
    storage = proxied_storage(retries=2, backoff=0)
    data = _object(MiB)
    storage.write("k", data)
    fault_proxy.plan(Rule(Fault.CUT, method="GET", has_header="Range", times=1))
    before = fault_proxy.requests
    assert storage.read_range("k", 1000, 600_000) == data[1000:600_000]
    assert fault_proxy.requests - before == 2  # the cut answer, then the rest of the range
    fault_proxy.plan(Rule(Fault.CUT_CONSISTENT, method="GET", has_header="Range", times=1))
    assert storage.read_range("k", 10, 100_000) == data[10:100_000]  # Content-Range no longer matched


def test_s3_read_ranges_merges_near_ranges(
    fault_proxy: FaultProxy, proxied_storage: ProxiedStorageFactory
) -> None:
    storage = proxied_storage()
    data = _object(6 * MiB)
    storage.write("k", data)
    ranges = [(5 * MiB, 5 * MiB + 10), (0, 10), (100, 200), (3 * MiB, 3 * MiB + 1), (7 * MiB, 8 * MiB)]
    before, moved = fault_proxy.requests, fault_proxy.body_bytes
    assert storage.read_ranges("k", ranges) == [data[start:end] for start, end in ranges]
    assert fault_proxy.requests - before == 4  # (0, 10) and (100, 200) in one GET; 7 MiB is past the end
    assert fault_proxy.body_bytes - moved < 200 + 10 + 1 + 1000  # and the 416 answer's error document


def test_fsspec_seeks_move_few_bytes(fault_proxy: FaultProxy, proxied_storage: ProxiedStorageFactory) -> None:
    storage = proxied_storage()
    data = _object(20 * MiB)
    storage.write("k", data)
    fs = fsspec.filesystem("objstore", storage=storage)
    spots = [(15 * MiB, 100), (2 * MiB, 4096), (9 * MiB + 7, 10)]
    for options, limit in (({}, 3 * 5 * MiB + 8192), ({"block_size": 64 << 10}, 3 * (64 << 10) + 8192)):
        before = fault_proxy.body_bytes
        with fs.open("k", "rb", **options) as file:
            for offset, count in spots:
                file.seek(offset)
                assert file.read(count) == data[offset : offset + count]
        moved = fault_proxy.body_bytes - before
        print(f"3 reads of a 20 MiB object through fs.open({options}): {moved} bytes moved")
        assert moved <= limit, (options, moved)
    before = fault_proxy.body_bytes
    assert fs.cat_ranges(["k"] * 3, [o for o, _ in spots], [o + c for o, c in spots]) == [
        data[o : o + c] for o, c in spots
    ]
    assert fault_proxy.body_bytes - before == sum(c for _, c in spots)
