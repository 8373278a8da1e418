"""cleanup() on every backend (leftovers of crashed writers go, objects never do); a closed posix store."""

from __future__ import annotations

import os

import pytest

from objstore import (
    CleanupResult,
    InvalidArgumentError,
    KeyConflictError,
    PosixStorage,
    Storage,
    StorageIOError,
)


def test_a_healthy_store_loses_nothing(storage: Storage) -> None:
    keys = ["a", "b/c", "b/d/e"]
    for key in keys:
        storage.write(key, key.encode())
    assert storage.cleanup(older_than=0) == CleanupResult()
    assert [storage.read_bytes(key) for key in keys] == [key.encode() for key in keys]


@pytest.mark.parametrize("older_than", [-1, float("nan"), "1h"])
def test_a_bad_grace_is_refused_by_name(storage: Storage, older_than: object) -> None:
    if type(storage).cleanup is Storage.cleanup:
        pytest.skip("this backend leaves nothing to clean up")
    with pytest.raises(InvalidArgumentError, match="older_than"):
        storage.cleanup(older_than=older_than)  # type: ignore[arg-type]


def empty_chain(top: str, depth: int) -> None:
    """``top`` and ``depth`` folders in a chain below it, made without long paths or recursion."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        fd, above = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(above)
    os.close(fd)


def test_a_write_clears_a_deep_chain_of_empty_folders_in_its_way(tmp_path: os.PathLike[str]) -> None:
    """Left by a crashed writer of a deep key: 500 levels (a key has at most 512) go."""
    storage = PosixStorage(tmp_path)
    empty_chain(os.path.join(storage.root, "data", "k"), 500)
    storage.write("k", b"in place")
    assert storage.read_bytes("k") == b"in place"


def test_a_write_refuses_a_planted_chain_deeper_than_any_key(tmp_path: os.PathLike[str]) -> None:
    storage = PosixStorage(tmp_path)
    empty_chain(os.path.join(storage.root, "data", "k"), 3000)
    with pytest.raises(KeyConflictError, match="'k'"):
        storage.write("k", b"lost")
    assert storage.cleanup(older_than=0).folders == 3001  # the sweep takes it: no recursion either
    storage.write("k", b"in place")


@pytest.mark.parametrize("call", ["write", "read_bytes", "stat", "delete", "list", "cleanup"])
def test_a_closed_store_refuses_every_call(tmp_path: os.PathLike[str], call: str) -> None:
    """Its descriptors' numbers may belong to another store by now: nothing may use them."""
    closed = PosixStorage(os.path.join(tmp_path, "closed"))
    closed.write("k", b"mine")
    closed.close()
    other = PosixStorage(os.path.join(tmp_path, "other"))  # likely reuses the closed store's numbers
    other.write("k", b"theirs")
    calls = {
        "write": lambda: closed.write("k", b"lost"),
        "read_bytes": lambda: closed.read_bytes("k"),
        "stat": lambda: closed.stat("k"),
        "delete": lambda: closed.delete("k"),
        "list": lambda: list(closed.list()),
        "cleanup": lambda: closed.cleanup(),
    }
    with pytest.raises(StorageIOError, match="closed"):
        calls[call]()
    assert other.read_bytes("k") == b"theirs"
