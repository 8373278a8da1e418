"""Stores that travel: every backend and the fsspec bridge pickle, and work on the other side."""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest

from objstore import (
    AlreadyExistsError,
    FsspecStorage,
    MemoryStorage,
    NotExistError,
    PreconditionFailedError,
    S3Storage,
    Storage,
)
from objstore.fsspec import ObjstoreFileSystem
from objstore.posix import PosixStorage
from tests import pickle_worker
from tests.conftest import StorageFactory
from tests.pickle_worker import CHILD_DATA, PARENT_DATA, PARENT_KEY

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 60.0


def roundtrip(value: Any) -> Any:
    return pickle.loads(pickle.dumps(value))


def run_in_spawned_child(storage: Storage, fs: ObjstoreFileSystem) -> dict[str, Any]:
    """Hand the store and the filesystem to a spawned process (pickled), run the worker; its report."""
    receiver, sender = SPAWN.Pipe(duplex=False)
    child = SPAWN.Process(target=pickle_worker.use, args=(storage, fs, sender), daemon=True)
    child.start()
    sender.close()
    try:
        assert receiver.poll(TIMEOUT), "the child did not answer in time"
        report = receiver.recv()
    finally:
        receiver.close()
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join(TIMEOUT)
    assert isinstance(report, dict), f"the child failed:\n{report}"
    assert child.exitcode == 0
    return report


def test_a_store_travels_to_a_spawned_process(storage: Storage, backend: str) -> None:
    storage.write(PARENT_KEY, PARENT_DATA)
    report = run_in_spawned_child(storage, ObjstoreFileSystem(storage=storage))

    assert report["pid"] != os.getpid()
    assert report["one store"]  # pickled together, the filesystem keeps the store it was given
    assert report["read"] == report["read through fsspec"] == PARENT_DATA
    assert report["keys"] == sorted([*CHILD_DATA, PARENT_KEY])
    if backend == "memory":  # the child wrote to its own copy
        assert list(storage.list_keys()) == [PARENT_KEY]
    else:
        for key, data in CHILD_DATA.items():
            assert storage.read_bytes(key) == data
    storage.write("parent/after", b"the parent's store still works")
    assert storage.read_bytes("parent/after") == b"the parent's store still works"


def test_an_fsspec_storage_travels_to_a_spawned_process(tmp_path: Path) -> None:
    storage = FsspecStorage(fsspec.filesystem("file"), str(tmp_path / "store"))
    storage.write(PARENT_KEY, PARENT_DATA)
    report = run_in_spawned_child(storage, ObjstoreFileSystem(storage))
    assert report["read"] == report["read through fsspec"] == PARENT_DATA
    for key, data in CHILD_DATA.items():
        assert storage.read_bytes(key) == data


def test_a_store_pickles_within_a_process(storage: Storage, backend: str) -> None:
    etag = storage.write("before", b"written before pickling")
    twin = roundtrip(storage)
    assert type(twin) is type(storage) and twin is not storage
    if backend != "memory":
        assert repr(twin) == repr(storage)
    assert twin.read_bytes("before") == b"written before pickling"
    assert twin.stat("before").etag == etag
    twin.write("after", b"written by the copy")
    twin.close()  # closing the copy leaves the original open
    assert storage.read_bytes("before") == b"written before pickling"
    if backend == "memory":
        assert not storage.exists("after")
    else:
        assert storage.read_bytes("after") == b"written by the copy"


def test_a_closed_store_pickles_and_the_copy_is_open(make_storage: StorageFactory) -> None:
    storage = make_storage()
    storage.write("k", b"kept")
    storage.close()
    twin = roundtrip(storage)
    try:
        assert twin.read_bytes("k") == b"kept"
        twin.write("new", b"written by the copy")
        assert twin.read_bytes("new") == b"written by the copy"
    finally:
        twin.close()


def test_a_memory_copy_is_independent() -> None:
    storage = MemoryStorage()
    storage.write("shared", b"before")
    for twin in (roundtrip(storage), copy.copy(storage), copy.deepcopy(storage)):
        assert twin.read_bytes("shared") == b"before"
        twin.write("shared", b"changed by the copy")
        twin.write("only/in/copy", b"x")
        assert storage.read_bytes("shared") == b"before"
        assert list(storage.list_keys()) == ["shared"]
        assert list(twin.list_keys()) == ["only/in/copy", "shared"]


@pytest.mark.parametrize("backend", ["s3"])
def test_an_s3_store_pickles_its_settings_not_its_client(storage: Storage) -> None:
    assert isinstance(storage, S3Storage)
    storage.write("k", b"x")  # the client and its connections exist now
    data = pickle.dumps(storage)
    assert b"Minio" not in data and b"urllib3" not in data
    twin = pickle.loads(data)
    assert (twin.endpoint, twin.bucket, twin.part_size, twin.retries, twin.timeout) == (
        storage.endpoint,
        storage.bucket,
        storage.part_size,
        storage.retries,
        storage.timeout,
    )
    assert twin.read_bytes("k") == b"x"
    assert twin._client is not storage._client


@pytest.mark.parametrize("backend", ["memory", "posix"])
@pytest.mark.parametrize(
    "make_fs",
    [
        lambda storage: ObjstoreFileSystem(storage),
        lambda storage: ObjstoreFileSystem(storage=storage),
        lambda storage: fsspec.filesystem("objstore", storage=storage),
    ],
    ids=["positional", "keyword", "fsspec.filesystem"],
)
def test_the_fsspec_bridge_pickles(
    storage: Storage, make_fs: Callable[[Storage], ObjstoreFileSystem]
) -> None:
    fs = make_fs(storage)
    fs.pipe("a/b", b"before")
    twin = roundtrip(fs)
    assert isinstance(twin, ObjstoreFileSystem) and twin is not fs
    assert type(twin.storage) is type(storage) and twin.storage is not storage
    assert twin.cat("a/b") == b"before"
    twin.pipe("a/c", b"by the copy")
    assert twin.find("a") == ["a/b", "a/c"]
    assert fs.find("a") == (["a/b"] if isinstance(storage, MemoryStorage) else ["a/b", "a/c"])


@pytest.mark.parametrize("backend", ["posix", "posixflat"])
def test_posix_copies_exclude_each_other(storage: Storage) -> None:
    """The original and its unpickled copy are two store objects on one root: their
    conditional writes are atomic among each other."""
    twin = roundtrip(storage)
    assert isinstance(storage, PosixStorage) == isinstance(twin, PosixStorage)
    stores = [storage, twin, storage, twin]
    start = threading.Barrier(len(stores))
    created: list[str] = []
    failures: list[BaseException] = []
    keys, increments = 20, 25
    storage.write("counter", b"0")

    def work(store: Storage, writer: int) -> None:
        try:
            start.wait(TIMEOUT)
            for number in range(keys):
                try:
                    store.write(f"race/{number}", b"%d" % writer, if_none_match=True)
                    created.append(f"race/{number}")
                except AlreadyExistsError:
                    pass
            done = 0
            while done < increments:
                info = store.stat("counter")
                value = int(store.read_bytes("counter"))
                try:
                    store.write("counter", b"%d" % (value + 1), if_match=info.etag)
                    done += 1
                except (PreconditionFailedError, NotExistError):
                    continue
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(store, n)) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    twin.close()
    assert not any(thread.is_alive() for thread in threads)
    assert not failures
    assert sorted(created) == sorted(f"race/{number}" for number in range(keys))  # one winner each
    assert int(storage.read_bytes("counter")) == len(stores) * increments  # no update lost
