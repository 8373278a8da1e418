"""One conformance suite for every backend: random operations compared with a model."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timezone

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from objstore import (
    AlreadyExistsError,
    CommonPrefix,
    InvalidKeyError,
    KeyConflictError,
    NotExistError,
    ObjectInfo,
    PreconditionFailedError,
    SizeMismatchError,
    Storage,
)
from tests.conftest import StorageFactory
from tests.model import StoreModel

# Characters chosen to sort around "/" (0x2F): "-" and "." below it, "0" above it,
# plus unicode, spaces and the characters URL encodings trip over.
SEGMENT = st.text(alphabet="ab0-. é%+~日", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
POSIX_KEYS = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)
FLAT_KEYS = st.text(alphabet="ab0-./ é%+", min_size=1, max_size=6)
DATA = st.binary(max_size=64)

BAD_KEYS_ALL = ["", "a\0b", "x" * 1025, "é" * 513, "\ud800"]
BAD_KEYS_POSIX = ["/a", "a/", "a//b", "./a", "a/./b", "a/..", "../x", "..", ".", "s" * 256]


def data_source(kind: str, data: bytes) -> object:
    """``data`` as each kind of source ``write`` accepts."""
    if kind == "file":
        return io.BytesIO(data)
    if kind == "chunks":
        return iter([data[: len(data) // 2], b"", data[len(data) // 2 :]])
    return data


def fold(entries: Iterator[ObjectInfo | CommonPrefix]) -> list[tuple[str, bool]]:
    return [(entry.key, isinstance(entry, CommonPrefix)) for entry in entries]


class StoreComparison(RuleBasedStateMachine):
    """Random operations on a backend and on the model; results must agree."""

    factory: StorageFactory
    tree: bool

    def __init__(self) -> None:
        super().__init__()
        self.storage: Storage = type(self).factory()
        self.model = StoreModel(tree=type(self).tree)
        self.stale_etags: list[str] = ["0-0-0", "d41d8cd98f00b204e9800998ecf8427e"]

    keys = POSIX_KEYS

    def expect_write(
        self, key: str, *, create: bool = False, etag: str | None = None
    ) -> type[Exception] | None:
        if self.model.conflicts(key):
            return KeyConflictError
        if create and key in self.model.objects:
            return AlreadyExistsError
        if etag is not None:
            if key not in self.model.objects:
                return NotExistError
            if self.model.etags[key] != etag:
                return PreconditionFailedError
        return None

    def store(self, key: str, data: bytes, etag: str) -> None:
        if key in self.model.etags:
            self.stale_etags.append(self.model.etags[key])
        self.model.objects[key] = data
        self.model.etags[key] = etag

    def attempt_write(
        self, key: str, data: bytes, expected: type[Exception] | None, **options: object
    ) -> None:
        if expected is None:
            etag = self.storage.write(key, data, **options)  # type: ignore[arg-type]
            assert isinstance(etag, str) and etag
            self.store(key, data, etag)
        else:
            with pytest.raises(expected):
                self.storage.write(key, data, **options)  # type: ignore[arg-type]

    @rule(
        key=st.deferred(lambda: StoreComparison.keys),
        data=DATA,
        kind=st.sampled_from(["bytes", "file", "chunks"]),
        persist=st.booleans(),
    )
    def write(self, key: str, data: bytes, kind: str, persist: bool) -> None:
        expected = self.expect_write(key)
        source = data_source(kind, data)
        if expected is None:
            etag = self.storage.write(key, source, persist=persist)  # type: ignore[arg-type]
            self.store(key, data, etag)
        else:
            with pytest.raises(expected):
                self.storage.write(key, source, persist=persist)  # type: ignore[arg-type]

    @rule(
        key=st.deferred(lambda: StoreComparison.keys),
        data=DATA,
        cut=st.integers(0, 70),
        kind=st.sampled_from(["bytes", "file", "chunks"]),
    )
    def write_sized(self, key: str, data: bytes, cut: int, kind: str) -> None:
        if cut > len(data):
            with pytest.raises(SizeMismatchError):
                self.storage.write(key, data_source(kind, data), size=cut)  # type: ignore[arg-type]
            return
        expected = self.expect_write(key)
        if expected is None:
            etag = self.storage.write(key, data_source(kind, data), size=cut)  # type: ignore[arg-type]
            self.store(key, data[:cut], etag)
        else:
            with pytest.raises(expected):
                self.storage.write(key, data_source(kind, data), size=cut)  # type: ignore[arg-type]

    @rule(key=st.deferred(lambda: StoreComparison.keys), data=DATA)
    def create(self, key: str, data: bytes) -> None:
        self.attempt_write(key, data, self.expect_write(key, create=True), if_none_match=True)

    @rule(
        key=st.deferred(lambda: StoreComparison.keys),
        data=DATA,
        stale=st.booleans(),
        pick=st.integers(0, 1000),
    )
    def replace(self, key: str, data: bytes, stale: bool, pick: int) -> None:
        if stale or key not in self.model.etags:
            etag = self.stale_etags[pick % len(self.stale_etags)]
        else:
            etag = self.model.etags[key]
        self.attempt_write(key, data, self.expect_write(key, etag=etag), if_match=etag)

    @rule(key=st.deferred(lambda: StoreComparison.keys))
    def delete(self, key: str) -> None:
        self.storage.delete(key)
        self.model.objects.pop(key, None)
        self.model.etags.pop(key, None)

    @rule(keys=st.lists(st.deferred(lambda: StoreComparison.keys), max_size=4))
    def delete_many(self, keys: list[str]) -> None:
        self.storage.delete_many(keys)
        for key in keys:
            self.model.objects.pop(key, None)
            self.model.etags.pop(key, None)

    @rule(src=st.deferred(lambda: StoreComparison.keys), dst=st.deferred(lambda: StoreComparison.keys))
    def copy(self, src: str, dst: str) -> None:
        if src not in self.model.objects:
            with pytest.raises(NotExistError):
                self.storage.copy(src, dst)
        elif self.model.conflicts(dst):
            with pytest.raises(KeyConflictError):
                self.storage.copy(src, dst)
        else:
            self.store(dst, self.model.objects[src], self.storage.copy(src, dst))

    @rule(key=st.deferred(lambda: StoreComparison.keys))
    def read(self, key: str) -> None:
        if key not in self.model.objects:
            with pytest.raises(NotExistError):
                self.storage.read(key)
            assert not self.storage.exists(key)
            with pytest.raises(NotExistError):
                self.storage.stat(key)
            return
        with self.storage.read(key) as stream:
            assert stream.read() == self.model.objects[key]
        info = self.storage.stat(key)
        assert info == ObjectInfo(
            key, len(self.model.objects[key]), info.last_modified, self.model.etags[key]
        )
        assert info.last_modified.tzinfo == timezone.utc
        assert self.storage.exists(key)

    @rule(data=st.data(), recursive=st.booleans())
    def list(self, data: st.DataObject, recursive: bool) -> None:
        known = sorted(self.model.objects) or ["a"]
        cut_of = data.draw(st.sampled_from(known))
        prefix = data.draw(st.sampled_from(["", cut_of[: len(cut_of) // 2], cut_of, cut_of + "/"]))
        start_after = data.draw(
            st.sampled_from(["", prefix, cut_of, cut_of[:-1] or "a", cut_of.rsplit("/", 1)[0] + "/"])
        )
        got = list(self.storage.list(prefix, start_after=start_after, recursive=recursive))
        assert fold(iter(got)) == self.model.listing(prefix, start_after, recursive)
        for entry in got:
            if isinstance(entry, ObjectInfo):
                assert entry.size == len(self.model.objects[entry.key])
                assert entry.etag == self.model.etags[entry.key]

    @rule(
        key=st.sampled_from(BAD_KEYS_ALL),
        operation=st.sampled_from(["write", "read", "stat", "delete", "copy", "exists"]),
    )
    def bad_key(self, key: str, operation: str) -> None:
        self.refuse(key, operation)

    def refuse(self, key: str, operation: str) -> None:
        calls = {
            "write": lambda: self.storage.write(key, b"x"),
            "read": lambda: self.storage.read(key),
            "stat": lambda: self.storage.stat(key),
            "delete": lambda: self.storage.delete(key),
            "copy": lambda: self.storage.copy("a", key),
            "exists": lambda: self.storage.exists(key),
        }
        with pytest.raises(InvalidKeyError) as caught:
            calls[operation]()
        assert repr(key)[:40].strip("'\"")[:20] in str(caught.value)

    @invariant()
    def same_objects(self) -> None:
        assert fold(self.storage.list()) == self.model.listing("", "", True)

    def teardown(self) -> None:
        self.storage.close()


class PosixComparison(StoreComparison):
    @rule(key=st.sampled_from(BAD_KEYS_POSIX), operation=st.sampled_from(["write", "read", "stat", "delete"]))
    def bad_posix_key(self, key: str, operation: str) -> None:
        self.refuse(key, operation)


class FlatComparison(StoreComparison):
    keys = st.one_of(POSIX_KEYS, FLAT_KEYS)


EXAMPLES = {"posix": 200, "posixflat": 200, "s3": 60, "memory": 200}


def test_matches_model(backend: str, make_storage: StorageFactory) -> None:
    machine = PosixComparison if backend == "posix" else FlatComparison
    machine = type(
        f"{machine.__name__}_{backend}",
        (machine,),
        {"factory": staticmethod(make_storage), "tree": backend == "posix"},
    )
    run_state_machine_as_test(
        machine, settings=settings(max_examples=EXAMPLES[backend], stateful_step_count=30)
    )
