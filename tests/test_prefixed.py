"""A prefixed store sees its folder of keys only: the conformance suite, and what lies outside."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import settings

from objstore import (
    AlreadyExistsError,
    CleanupResult,
    CommonPrefix,
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    MemoryStorage,
    NotExistError,
    PosixStorage,
    PreconditionFailedError,
    PrefixedStorage,
    Storage,
)
from objstore.testing import Capabilities, StorageSuite, conformance_settings
from tests.conftest import StorageFactory

PREFIX = "box/inner/"
#: Objects beside the prefix, sorting just before and after it, and at the root: there, with
#: keys that the conformance suite writes too, so that a key not prefixed would hit them.
OUTSIDE = {
    "0": b"0",
    "a": b"a",
    "ab": b"ab",
    "b": b"b",
    "c/a": b"c/a",
    "é": b"e",
    "box/a": b"a",
    "box/inne": b"inne",
    "box/inner-x": b"dash",
    "box/inner.txt": b"dot",
    "box/inner0": b"zero",
    "box/innes/x": b"innes",
    "boy": b"boy",
    "outside": b"outside",
}
EXAMPLES = {"posix": 100, "s3": 40, "memory": 100}


@pytest.fixture(params=["posix", "s3", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backends under the prefix (conftest's ``make_storage`` follows this one)."""
    return str(request.param)


def outside_objects(inner: Storage) -> dict[str, bytes]:
    """The objects of ``inner`` outside the prefix, read through a store of their own."""
    store = PosixStorage(inner.root) if isinstance(inner, PosixStorage) else inner
    try:
        return {key: store.read_bytes(key) for key in store.list_keys() if not key.startswith(PREFIX)}
    finally:
        if store is not inner:
            store.close()


@pytest.fixture
def make_prefixed(
    make_storage: StorageFactory, backend: str, request: pytest.FixtureRequest
) -> Iterator[StorageFactory]:
    """Fresh prefixed stores over fresh stores that hold ``OUTSIDE``; at the end, it is intact."""
    if backend == "s3":
        request.getfixturevalue("s3_bucket")  # its buckets are removed after the check below
    made: list[Storage] = []

    def make() -> Storage:
        inner = make_storage()
        for key, data in OUTSIDE.items():
            inner.write(key, data)
        made.append(inner)
        return PrefixedStorage(inner, PREFIX)

    yield make
    for inner in made:
        assert outside_objects(inner) == OUTSIDE


class TestPrefixedConformance(StorageSuite):
    @pytest.fixture
    def make_storage(self, make_prefixed: StorageFactory) -> StorageFactory:
        return make_prefixed

    @pytest.fixture
    def capabilities(self, backend: str, make_prefixed: StorageFactory) -> Capabilities:
        return Capabilities.of(make_prefixed(), tree=backend == "posix")

    @pytest.fixture
    def conformance_settings(self, backend: str) -> settings:
        return conformance_settings(max_examples=EXAMPLES[backend])


def test_keys_are_relative(make_prefixed: StorageFactory) -> None:
    store = make_prefixed()
    assert isinstance(store, PrefixedStorage)
    inner = store.storage
    etag = store.write("logs/1.log", b"one")
    store.write("logs/2.log", b"two")
    store.write("top", b"top")
    assert inner.read_bytes("box/inner/logs/1.log") == b"one"
    assert store.stat("logs/1.log").key == "logs/1.log" and store.stat("logs/1.log").etag == etag
    assert [entry.key for entry in store.list()] == ["logs/1.log", "logs/2.log", "top"]
    assert list(store.list_keys()) == ["logs/1.log", "logs/2.log", "top"]
    top = store.stat("top")
    if not store.lists_metadata:
        top = attrs.evolve(top, content_type=None, metadata=None)
    assert list(store.list(recursive=False)) == [CommonPrefix("logs/"), top]
    assert list(store.list_keys(recursive=False)) == [CommonPrefix("logs/"), "top"]
    assert list(store.list_keys("logs/", start_after="logs/1.log")) == ["logs/2.log"]
    assert list(store.list_keys(start_after="logs/")) == ["logs/1.log", "logs/2.log", "top"]
    assert list(store.list_keys("lo", recursive=False)) == [CommonPrefix("logs/")]
    assert list(store.list_keys("x" * 1020)) == []  # longer than any key, with the prefix
    assert store.copy("top", "copied") != ""
    assert store.read_bytes("copied") == b"top" and inner.exists("box/inner/copied")
    with store.read("logs/2.log") as stream:
        assert stream.read() == b"two"
    store.delete_many(["logs/1.log", "logs/2.log", "top", "copied", "outside", "boy"])
    assert list(store.list()) == []
    assert outside_objects(inner) == OUTSIDE


def test_nothing_outside_can_be_reached(make_prefixed: StorageFactory, backend: str) -> None:
    store = make_prefixed()
    for key in OUTSIDE:
        assert not store.exists(key)
        store.delete(key)
    store.delete_many(OUTSIDE)
    for key in ["../outside", "../../boy", "./../inner0", "/outside", "a/../../../outside"]:
        literal = backend == "memory" or (backend == "s3" and ".." not in key)
        if literal:  # keys are plain strings there: "../" is no step up, "/" no root
            with pytest.raises(NotExistError):
                store.copy(key, "stolen")
            store.write(key, b"x")
            assert store.read_bytes(key) == b"x"
            store.delete(key)
            continue
        with pytest.raises(InvalidKeyError):
            store.write(key, b"overwritten")
        with pytest.raises(InvalidKeyError):
            store.read_bytes(key)
        with pytest.raises(InvalidKeyError):
            store.delete(key)
        with pytest.raises(InvalidKeyError):
            store.delete_many([key])
        with pytest.raises(InvalidKeyError):
            store.copy(key, "stolen")
    assert list(store.list_keys("../")) == [] and list(store.list_keys("")) == []
    assert outside_objects(store.storage) == OUTSIDE  # type: ignore[attr-defined]


def test_errors_name_the_relative_key(make_prefixed: StorageFactory, backend: str) -> None:
    store = make_prefixed()
    with pytest.raises(NotExistError) as missing:
        store.read_bytes("missing")
    assert missing.value.key == "missing" and str(missing.value) == "object 'missing' does not exist"
    assert isinstance(missing.value.__cause__, NotExistError)
    assert missing.value.__cause__.key == "box/inner/missing"
    with pytest.raises(NotExistError) as stat_missing:
        store.stat("missing")
    assert stat_missing.value.key == "missing"
    etag = store.write("k", b"1", if_none_match=True)
    with pytest.raises(AlreadyExistsError) as exists:
        store.write("k", b"2", if_none_match=True)
    assert exists.value.key == "k" and "'k'" in str(exists.value) and "box" not in str(exists.value)
    store.write("k", b"2", if_match=etag)
    with pytest.raises(PreconditionFailedError) as failed:
        store.write("k", b"3", if_match=etag)
    assert (failed.value.key, failed.value.expected_etag) == ("k", etag)
    if backend == "posix":
        with pytest.raises(KeyConflictError) as conflict:
            store.write("k/under", b"x")
        assert conflict.value.key == "k/under"


def test_keys_obey_the_inner_rules_with_the_prefix() -> None:
    store = PrefixedStorage(MemoryStorage(), "p" * 1000)
    store.write("k" * 23, b"fits")  # 1001 + 23 = 1024 bytes
    with pytest.raises(InvalidKeyError) as caught:
        store.write("k" * 24, b"too long")
    assert caught.value.key == "k" * 24 and "with the prefix" in str(caught.value)
    with pytest.raises(InvalidKeyError):
        store.write("", b"empty")


@pytest.mark.parametrize(
    ("prefix", "normalised"),
    [("a", "a/"), ("a/", "a/"), ("a/b", "a/b/"), ("a/b/", "a/b/"), ("é x", "é x/")],
)
def test_prefix_is_normalised(prefix: str, normalised: str) -> None:
    assert PrefixedStorage(MemoryStorage(), prefix).prefix == normalised


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "/",
        "/a",
        "a//b",
        "a//",
        "..",
        "a/..",
        "../a",
        "a/../b",
        ".",
        "./a",
        "a/./b",
        "a\0b",
        "x" * 1024,
        5,
    ],
)
def test_bad_prefixes_are_refused(prefix: object) -> None:
    with pytest.raises(InvalidArgumentError, match="prefix"):
        PrefixedStorage(MemoryStorage(), prefix)  # type: ignore[arg-type]


def test_prefix_follows_the_inner_key_rules(tmp_path: object) -> None:
    with PosixStorage(str(tmp_path)) as posix:
        with pytest.raises(InvalidArgumentError, match="segment"):
            PrefixedStorage(posix, "s" * 256)  # a posix folder name has at most 255 bytes
        assert PrefixedStorage(posix, "s" * 255).prefix == "s" * 255 + "/"
    with pytest.raises(InvalidArgumentError, match="Storage"):
        PrefixedStorage("not a store", "p")  # type: ignore[arg-type]


class Recording(MemoryStorage):
    """A memory store that records cleanup and close, and cannot write conditionally."""

    supports_conditional_writes = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def cleanup(self, older_than: float = 12.0) -> CleanupResult:
        self.calls.append(("cleanup", older_than))
        return CleanupResult(temporaries=1)

    def close(self) -> None:
        self.calls.append(("close", None))


def test_cleanup_close_and_capabilities_are_the_inner_stores() -> None:
    inner = Recording()
    with PrefixedStorage(inner, "p") as store:
        assert not store.supports_conditional_writes
        assert store.cleanup() == CleanupResult(temporaries=1)
        store.cleanup(5.0)
        assert repr(store).startswith("PrefixedStorage(") and "'p/'" in repr(store)
    assert inner.calls == [("cleanup", 12.0), ("cleanup", 5.0), ("close", None)]


def test_pickles_when_the_wrapped_store_does(make_prefixed: StorageFactory) -> None:
    store = make_prefixed()
    store.write("k", b"v")
    twin = pickle.loads(pickle.dumps(store))
    assert isinstance(twin, PrefixedStorage) and twin.prefix == PREFIX
    assert twin.read_bytes("k") == b"v" and list(twin.list_keys()) == ["k"]
    twin.close()
