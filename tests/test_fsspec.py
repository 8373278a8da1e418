"""The fsspec bridge: ``ObjstoreFileSystem`` over objstore backends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.callbacks import Callback
from fsspec.spec import AbstractFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import (
    CommonPrefix,
    InvalidArgumentError,
    KeyConflictError,
    MemoryStorage,
    NotExistError,
    ObjectChangedError,
    ObjectInfo,
    PreconditionFailedError,
    Storage,
    testing,
)
from objstore.attributes import DEFAULT_ATTRIBUTES, Attributes
from objstore.fsspec import ObjstoreFileSystem
from objstore.storage import Chunks


@pytest.fixture(params=["memory", "posix"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fs(storage: Storage) -> ObjstoreFileSystem:
    return ObjstoreFileSystem(storage)


class CountingStorage(testing.CountingStorage):
    """Another store seen through a counter of the requests made to it, which also records
    each listing and the bytes that writes take from their source."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.lists: list[tuple[str, bool]] = []
        self.received = 0

    @property
    def calls(self) -> dict[str, int]:
        return self.counts

    def _write(
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> str:
        return super()._write(
            key,
            self._received(chunks),
            persist=persist,
            if_none_match=if_none_match,
            if_match=if_match,
            attributes=attributes,
        )

    def _received(self, chunks: Chunks) -> Chunks:
        for chunk in chunks:
            self.received += len(chunk)
            yield chunk

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        self.lists.append((prefix, recursive))
        return super()._list(prefix, start_after, recursive)


# -- the protocol ------------------------------------------------------------------


def test_registered_as_the_objstore_protocol() -> None:
    [entry] = [entry for entry in entry_points(group="fsspec.specs") if entry.name == "objstore"]
    assert entry.value == "objstore.fsspec:ObjstoreFileSystem"
    assert fsspec.get_filesystem_class("objstore") is ObjstoreFileSystem
    storage = MemoryStorage()
    with fsspec.open("objstore://logs/1.txt", "wt", storage=storage) as file:
        file.write("hello")
    assert storage.read_bytes("logs/1.txt") == b"hello"
    fs, path = fsspec.core.url_to_fs("objstore://logs/", storage=storage)
    assert fs.storage is storage and fs.ls(path, detail=False) == ["logs/1.txt"]
    assert fsspec.filesystem("objstore", storage=storage) is not fs  # the store is the identity


def test_needs_a_storage() -> None:
    with pytest.raises(InvalidArgumentError):
        ObjstoreFileSystem("memory://")  # type: ignore[arg-type]


# -- whole files ---------------------------------------------------------------------


def test_pipe_and_cat(fs: ObjstoreFileSystem) -> None:
    fs.pipe({"a/1": b"0123456789", "a/2": b"x"})
    assert fs.cat("a/1") == b"0123456789"
    assert fs.cat("a/*") == {"a/1": b"0123456789", "a/2": b"x"}
    assert fs.cat_file("a/1", start=2, end=5) == b"234"
    assert fs.cat_file("a/1", start=-3) == b"789"
    assert fs.cat_file("a/1", start=1, end=-7) == b"12"
    assert fs.cat_file("a/1", start=8, end=20) == b"89"
    with pytest.raises(FileNotFoundError):
        fs.cat("a/missing")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("a", start=1)


def test_pipe_create_is_a_conditional_write(fs: ObjstoreFileSystem) -> None:
    fs.pipe_file("k", b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file("k", b"second", mode="create")
    assert fs.cat("k") == b"first"
    with pytest.raises(ValueError, match="overwrite"):
        fs.pipe_file("k", b"x", mode="append")


def test_put_and_get(fs: ObjstoreFileSystem, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "deep").mkdir(parents=True)
    (source / "one").write_bytes(b"1" * 3000)
    (source / "deep" / "two").write_bytes(b"2")

    class Sizes(Callback):  # type: ignore[misc]
        def call(self, *args: Any, **kwargs: Any) -> None:
            pass

    callback = Sizes()
    fs.put_file(str(source / "one"), "up/one", callback=callback)
    assert (callback.size, callback.value) == (3000, 3000)
    fs.put(str(source) + "/", "up", recursive=True)
    assert fs.find("up") == ["up/deep/two", "up/one"]
    fs.get("up", str(tmp_path / "down"), recursive=True)
    assert (tmp_path / "down" / "deep" / "two").read_bytes() == b"2"
    assert (tmp_path / "down" / "one").read_bytes() == b"1" * 3000
    with pytest.raises(FileNotFoundError):
        fs.get_file("up/missing", str(tmp_path / "missing"))


# -- files ---------------------------------------------------------------------------


def test_writes_stream_and_appear_whole_at_close(storage: Storage) -> None:
    counting = CountingStorage(storage)
    fs = ObjstoreFileSystem(counting)
    fs.pipe_file("big", b"old")
    counting.received = 0
    with fs.open("big", "wb", block_size=1000) as file:
        for _ in range(20):
            file.write(b"x" * 700)  # blocks of 1,400 bytes stream into one write
            assert fs.cat("big") == b"old"
        assert counting.received >= 14000 - 3 * 1400  # at most one block queued, one being written
    assert fs.cat("big") == b"x" * 14000
    assert counting.calls["write"] == 2


@pytest.mark.parametrize("size", [10, 5000])
def test_a_file_left_by_an_exception_stores_nothing(fs: ObjstoreFileSystem, size: int) -> None:
    fs.pipe_file("k", b"old")
    with pytest.raises(RuntimeError), fs.open("k", "wb", block_size=1000) as file:
        file.write(b"n" * size)
        raise RuntimeError("the writer failed")
    assert fs.cat("k") == b"old"
    with pytest.raises(RuntimeError), fs.open("new", "xb", block_size=1000) as file:
        file.write(b"n" * size)
        raise RuntimeError("the writer failed")
    assert not fs.exists("new")  # the claim is given up


def test_exclusive_open_claims_the_key(fs: ObjstoreFileSystem) -> None:
    with fs.open("k", "xb") as first:
        with pytest.raises(FileExistsError):
            fs.open("k", "xb")
        first.write(b"mine")
    assert fs.cat("k") == b"mine"
    with pytest.raises(FileExistsError):
        fs.open("k", "xb")
    with pytest.raises(PreconditionFailedError), fs.open("late", "xb") as file:
        fs.storage.write("late", b"another writer")  # replaced the claim
        file.write(b"mine")
    assert fs.cat("late") == b"another writer"


def test_exclusive_open_lets_one_of_many_threads_win(fs: ObjstoreFileSystem) -> None:
    winners: list[int] = []

    def claim(number: int) -> None:
        try:
            with fs.open("race", "xb") as file:
                file.write(str(number).encode())
            winners.append(number)
        except FileExistsError:
            pass

    threads = [threading.Thread(target=claim, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and fs.cat("race") == str(winners[0]).encode()


def test_only_binary_read_and_write_modes(fs: ObjstoreFileSystem) -> None:
    fs.pipe_file("k", b"x")
    for mode in ("ab", "r+b"):
        with pytest.raises(ValueError, match="'rb', 'wb' or 'xb'"):
            fs.open("k", mode)
    with fs.open("k", "r") as text:
        assert text.read() == "x"


def test_reads_seek_within_one_version(fs: ObjstoreFileSystem) -> None:
    fs.pipe_file("k", bytes(range(200)))
    with fs.open("k", "rb", block_size=16) as file:
        assert file.size == 200 and file.info()["etag"] == fs.info("k")["etag"]
        assert file.read(10) == bytes(range(10))
        file.seek(150)
        assert file.read(5) == bytes(range(150, 155))
        file.seek(-10, 2)
        assert file.read() == bytes(range(190, 200))
        file.seek(3)
        assert file.read(2) == b"\x03\x04"
    with fs.open("k", "rb") as file:
        fs.pipe_file("k", b"replaced before the first read")
        with pytest.raises(ObjectChangedError):
            file.read()
    with pytest.raises(FileNotFoundError):
        fs.open("missing", "rb")


@pytest.mark.parametrize("backend", ["s3"])
def test_seeks_on_s3_are_ranged_reads(storage: Storage) -> None:
    counting = CountingStorage(storage)
    fs = ObjstoreFileSystem(counting)
    fs.pipe_file("k", bytes(range(256)) * 4)
    with fs.open("k", "rb", block_size=64, cache_type="none") as file:
        file.seek(700)
        assert file.read(4) == bytes(range(188, 192))
        file.seek(10)
        assert file.read(4) == bytes(range(10, 14))  # one ranged read each: never from 0 again
        assert counting.calls["read"] == 2
        storage.write("k", b"replaced")
        file.seek(0)
        with pytest.raises(ObjectChangedError):
            file.read(1)


def test_transactions_commit_together(fs: ObjstoreFileSystem) -> None:
    with fs.transaction:
        fs.pipe_file("t/1", b"one")  # no deferral: pipe writes at once
        with fs.open("t/2", "wb", block_size=1000) as file:
            file.write(b"2" * 3000)
        with fs.open("t/3", "wb") as file:
            file.write(b"three")
        assert fs.find("t") == ["t/1"]
    assert fs.cat("t/3") == b"three" and fs.cat("t/2") == b"2" * 3000
    with pytest.raises(RuntimeError), fs.transaction:
        with fs.open("t/4", "wb") as file:
            file.write(b"four")
        raise RuntimeError("the transaction failed")
    assert not fs.exists("t/4")


# -- directories -------------------------------------------------------------------


def test_directories_are_prefixes(fs: ObjstoreFileSystem) -> None:
    assert fs.ls("") == [] and fs.find("") == []
    fs.mkdir("empty")  # nothing to make: a directory exists while keys lie below it
    assert not fs.exists("empty")
    with pytest.raises(FileNotFoundError):
        fs.ls("empty")
    fs.pipe({"d/f": b"1", "d/sub/g": b"22", "top": b""})
    assert fs.ls("", detail=False) == ["d", "top"]
    assert fs.ls("d/") == [
        {"name": "d/f", "size": 1, "type": "file", **_details(fs, "d/f")},
        {"name": "d/sub", "size": 0, "type": "directory"},
    ]
    assert fs.ls("top", detail=False) == ["top"]
    assert fs.info("d") == {"name": "d", "size": 0, "type": "directory"}
    assert fs.isdir("d/sub") and not fs.isfile("d/sub") and fs.isfile("d/sub/g")
    assert fs.info("") == {"name": "", "size": 0, "type": "directory"}
    assert fs.modified("d/f") == fs.storage.stat("d/f").last_modified
    fs.rm("d/sub/g")
    assert not fs.exists("d/sub")


def _details(fs: ObjstoreFileSystem, path: str) -> dict[str, Any]:
    """What the file's details hold besides its name, size and type."""
    info = fs.storage.stat(path)
    details: dict[str, Any] = {"etag": info.etag, "last_modified": info.last_modified}
    details["mtime"] = info.last_modified.timestamp()
    if fs.storage.lists_metadata:
        details.update(content_type=info.content_type, metadata=dict(info.metadata or {}))
    return details


@pytest.mark.parametrize("backend", ["memory"])
def test_a_flat_store_shows_what_paths_can_name(fs: ObjstoreFileSystem) -> None:
    for key in ["a", "a/b", "x//y", "x/", "/z", "x/ok"]:
        fs.storage.write(key, key.encode())
    assert fs.info("a")["type"] == "file" and fs.isdir("a") and fs.isfile("a")
    assert fs.ls("a", detail=False) == ["a/b"]
    assert fs.ls("", detail=False) == ["a", "a", "x"]  # the file a, and the directory a
    assert fs.ls("x", detail=False) == ["x/ok"]
    assert fs.find("") == ["a", "a/b", "x/ok"]


@pytest.mark.parametrize("backend", ["posix"])
def test_posix_key_conflicts_come_through(fs: ObjstoreFileSystem) -> None:
    fs.pipe_file("a/b", b"inner")
    with pytest.raises(KeyConflictError):
        fs.pipe_file("a", b"outer")
    with pytest.raises(KeyConflictError), fs.open("a", "wb") as file:
        file.write(b"outer")


def test_find_and_glob(fs: ObjstoreFileSystem) -> None:
    fs.pipe({key: b"" for key in ["r/a.csv", "r/b.txt", "r/s/c.csv", "r/s/t/d.csv", "ra.csv"]})
    assert fs.find("r") == ["r/a.csv", "r/b.txt", "r/s/c.csv", "r/s/t/d.csv"]
    assert fs.find("r", maxdepth=1) == ["r/a.csv", "r/b.txt"]
    assert fs.find("r", maxdepth=2, withdirs=True) == ["r", "r/a.csv", "r/b.txt", "r/s", "r/s/c.csv", "r/s/t"]
    assert fs.find("r/a.csv") == ["r/a.csv"] and fs.find("missing") == []
    assert fs.glob("r/*.csv") == ["r/a.csv"]
    assert fs.glob("r/**/*.csv") == ["r/a.csv", "r/s/c.csv", "r/s/t/d.csv"]
    assert fs.glob("r*") == ["r", "ra.csv"]
    assert fs.glob("r/s?") == [] and fs.glob("r/[ab].*") == ["r/a.csv", "r/b.txt"]
    assert fs.glob("r/b.txt") == ["r/b.txt"]
    assert list(fs.glob("r/s/*", detail=True).values()) == [
        fs.info("r/s/c.csv"),
        {"name": "r/s/t", "size": 0, "type": "directory"},
    ]


class ReferenceFileSystem(ObjstoreFileSystem):
    """The bridge with fsspec's own find and glob, which walk the tree with ``ls``."""

    find = AbstractFileSystem.find
    glob = AbstractFileSystem.glob


SEGMENTS = st.sampled_from(["a", "b", "ab", "a.c"])
PATTERN_SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "?", "a*", "*.c", "**", "[ab]", "[!a]*"])


@settings(max_examples=150)
@given(
    keys=st.sets(st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join), min_size=1, max_size=12),
    data=st.data(),
)
def test_find_and_glob_agree_with_fsspecs_walk(keys: set[str], data: st.DataObject) -> None:
    storage = MemoryStorage()  # flat: "a" may be a file and a directory
    for key in keys:
        storage.write(key, b"")
    fs, reference = ObjstoreFileSystem(storage), ReferenceFileSystem(storage)
    path = data.draw(st.sampled_from(["", *keys, *(key.rsplit("/", 1)[0] for key in keys)]))
    maxdepth = data.draw(st.none() | st.integers(1, 4))
    withdirs = data.draw(st.booleans())
    assert fs.find(path, maxdepth=maxdepth, withdirs=withdirs) == reference.find(
        path, maxdepth=maxdepth, withdirs=withdirs
    )
    pattern = data.draw(st.lists(PATTERN_SEGMENTS, min_size=1, max_size=4).map("/".join))
    depth = data.draw(st.none() | st.integers(1, 3)) if "**" in pattern else None
    assert fs.glob(pattern, maxdepth=depth) == reference.glob(pattern, maxdepth=depth)


@pytest.mark.parametrize("backend", ["memory", "s3"])
def test_a_narrow_glob_or_find_lists_only_its_prefix(storage: Storage) -> None:
    counting = CountingStorage(storage)
    fs = ObjstoreFileSystem(counting)
    storage.delete_many([])
    fs.pipe({f"other/{n:03d}": b"" for n in range(30)} | {"data/2024-01.csv": b"", "data/2025-01.csv": b""})
    fs.pipe({"data/2024-02/part.csv": b"", "data/2024.txt": b""})
    assert fs.glob("data/2024-*.csv") == ["data/2024-01.csv"]
    assert counting.lists == [("data/2024-", False)]
    counting.lists.clear()
    assert fs.glob("data/2024-*/**/*.csv") == ["data/2024-02/part.csv"]
    assert counting.lists == [("data/2024-", True)]
    counting.lists.clear()
    assert fs.find("data/2024-02") == ["data/2024-02/part.csv"]
    assert counting.lists == [("data/2024-02/", True)]
    counting.lists.clear()
    fs.rm("data", recursive=True)
    assert counting.lists == [("data/", True)] and counting.calls["delete"] == 1
    assert [entry.key for entry in storage.list()] == [f"other/{n:03d}" for n in range(30)]


# -- copying, moving, deleting -------------------------------------------------------


def test_copy_move_and_delete(fs: ObjstoreFileSystem) -> None:
    fs.pipe({"src/a": b"a", "src/deep/b": b"b"})
    fs.cp("src/a", "one")
    fs.cp("src", "copy", recursive=True)
    assert fs.find("copy") == ["copy/a", "copy/deep/b"]
    fs.mv("copy", "moved", recursive=True)
    assert fs.find("moved") == ["moved/a", "moved/deep/b"] and not fs.exists("copy")
    fs.mv("one", "two")
    assert fs.cat("two") == b"a" and not fs.exists("one")
    with pytest.raises(FileNotFoundError):
        fs.cp_file("missing", "x")
    with pytest.raises(FileNotFoundError):
        fs.rm("missing", recursive=True)
    fs.rm(["two", "moved/a"])
    assert fs.find("") == ["moved/deep/b", "src/a", "src/deep/b"]
    with pytest.raises(NotExistError):
        fs.storage.stat("two")


def test_info_shows_the_content_type_and_metadata(storage: Storage) -> None:
    fs = ObjstoreFileSystem(storage)
    storage.write("t/a.csv", b"x,y\n", content_type="text/csv", metadata={"rows": "1"})
    info = fs.info("t/a.csv")
    assert (info["content_type"], info["metadata"]) == ("text/csv", {"rows": "1"})
    [listed] = fs.ls("t", detail=True)
    if storage.lists_metadata:
        assert (listed["content_type"], listed["metadata"]) == ("text/csv", {"rows": "1"})
    else:
        assert "content_type" not in listed and "metadata" not in listed
