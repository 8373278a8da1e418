"""``FsspecStorage``: fsspec's memory and local filesystems as objstore backends."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import settings

from objstore import (
    FsspecStorage,
    KeyConflictError,
    NotExistError,
    ObjectInfo,
    PermissionDeniedError,
    StorageIOError,
    UnsupportedError,
)
from objstore.testing import Capabilities, StorageSuite, conformance_settings
from tests.conftest import FSSPEC_FILESYSTEMS, StorageFactory, fresh_memory_fs

MakeFsspecStorage = Callable[[str], FsspecStorage]


@pytest.fixture(params=FSSPEC_FILESYSTEMS)
def filesystem(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage(filesystem: str, make_fsspec_storage: MakeFsspecStorage) -> FsspecStorage:
    return make_fsspec_storage(filesystem)


class TestConformance(StorageSuite):
    @pytest.fixture
    def make_storage(self, filesystem: str, make_fsspec_storage: MakeFsspecStorage) -> StorageFactory:
        return lambda: make_fsspec_storage(filesystem)

    @pytest.fixture
    def capabilities(self, make_storage: StorageFactory) -> Capabilities:
        return Capabilities.of(make_storage(), tree=True)

    @pytest.fixture
    def conformance_settings(self) -> settings:
        return conformance_settings(max_examples=150)


def test_declares_what_it_cannot_do(storage: FsspecStorage) -> None:
    assert Capabilities.of(storage, tree=True) == Capabilities(
        tree=True,
        path_keys=True,
        dot_segments=False,
        conditional_writes=False,
        metadata=False,
        listed_metadata=False,
    )
    with pytest.raises(UnsupportedError, match="conditionally"):
        storage.write("a", b"x", if_none_match=True)
    with pytest.raises(UnsupportedError, match="content type or metadata"):
        storage.write("a", b"x", content_type="text/plain")
    with pytest.raises(UnsupportedError, match="content type or metadata"):
        storage.write("a", b"x", metadata={"k": "v"})
    assert not storage.exists("a")
    storage.write("a", b"x", content_type="application/octet-stream", metadata={})  # the defaults
    info = storage.stat("a")
    assert (info.content_type, info.metadata) == (None, None)


def test_a_failing_source_stores_nothing(storage: FsspecStorage) -> None:
    storage.write("logs/a", b"old")

    def failing() -> Iterator[bytes]:
        yield b"new"
        raise OSError("the source broke")

    for key in ["logs/a", "logs/b/c"]:
        with pytest.raises(OSError, match="the source broke") as caught:
            storage.write(key, failing())
        assert type(caught.value) is OSError  # the source's own error, unchanged
    assert storage.read_bytes("logs/a") == b"old"
    assert [entry.key for entry in storage.list()] == ["logs/a"]
    assert storage.fs.ls(storage._path("logs"), detail=False) == [storage._path("logs/a")]  # no folder b


def test_keys_are_paths_of_a_tree(storage: FsspecStorage) -> None:
    storage.write("a/b", b"inner")
    with pytest.raises(KeyConflictError):
        storage.write("a", b"outer")
    with pytest.raises(KeyConflictError):
        storage.write("a/b/c", b"below an object")
    storage.delete("a/b")
    assert not storage.fs.exists(storage._path("a"))  # the emptied folder went with it
    storage.write("a", b"outer")
    assert storage.read_bytes("a") == b"outer"


def test_empty_folders_give_way(storage: FsspecStorage) -> None:
    storage.fs.makedirs(storage._path("x/y/z"), exist_ok=True)
    storage.write("x", b"object")
    assert storage.read_bytes("x") == b"object" and [e.key for e in storage.list()] == ["x"]


def test_stat_and_listing_agree_and_etags_change(storage: FsspecStorage) -> None:
    first = storage.write("k", b"one")
    second = storage.write("k", b"two!")
    assert first != second
    info = storage.stat("k")
    assert info == ObjectInfo("k", 4, info.last_modified, second)
    assert list(storage.list()) == [info]
    with pytest.raises(NotExistError):
        storage.stat("missing/k")


def test_stores_on_one_filesystem_keep_to_their_roots() -> None:
    fs = fresh_memory_fs()
    left, right = FsspecStorage(fs, "/left"), FsspecStorage(fs, "memory://right/")
    left.write("k", b"left")
    right.write("k", b"right")
    fs.pipe_file("/leftover", b"not an object of either")
    assert [e.key for e in left.list()] == ["k"] and right.read_bytes("k") == b"right"
    assert repr(right) == "FsspecStorage(memory, '/right')"


def test_any_filesystem_by_url(tmp_path: Path) -> None:
    fs, root = fsspec.core.url_to_fs(f"file://{tmp_path}/store")
    storage = FsspecStorage(fs, root)
    storage.write("a/b", b"x")
    assert (tmp_path / "store" / "a" / "b").read_bytes() == b"x"


class RefusingFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """A memory filesystem whose writes fail with ``error``."""

    error: OSError = PermissionError(errno.EACCES, "read-only")

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:
            raise self.error
        return super()._open(path, mode, **kwargs)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "read-only"), PermissionDeniedError),
        (OSError(errno.ENOSPC, "full"), StorageIOError),
    ],
)
def test_os_errors_become_objstore_errors(error: OSError, expected: type[Exception]) -> None:
    fs = RefusingFileSystem(skip_instance_cache=True)
    fs.store, fs.pseudo_dirs, fs.error = {}, [""], error
    storage = FsspecStorage(fs, "/store")
    with pytest.raises(expected) as caught:
        storage.write("a", b"x")
    assert caught.value.__cause__ is error and not storage.exists("a")
