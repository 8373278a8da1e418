"""Random operations on a backend and on the model (hypothesis); the results must agree."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import ClassVar, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ..attributes import DEFAULT_ATTRIBUTES, Attributes
from ..errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    NotExistError,
    ObjectChangedError,
    PreconditionFailedError,
    SizeMismatchError,
    UnsupportedError,
)
from ..info import CommonPrefix, ObjectInfo
from ..storage import Storage
from .capabilities import Capabilities
from .model import StoreModel

StorageFactory = Callable[[], Storage]

# Characters chosen to sort around "/" (0x2F): "-" and "." below it, "0" above it,
# plus unicode, spaces and the characters URL encodings trip over.
SEGMENT = st.text(alphabet="ab0-. é%+~日", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
PATH_KEYS = st.lists(SEGMENT, min_size=1, max_size=3).map("/".join)
FLAT_KEYS = st.text(alphabet="ab0-./ é%+", min_size=1, max_size=6)
DATA = st.binary(max_size=64)
#: What a write may store besides its bytes, as (content_type, metadata) arguments.
ATTRIBUTES = st.tuples(
    st.sampled_from([None, "text/plain", "application/json; charset=utf-8"]),
    st.none()
    | st.dictionaries(
        st.sampled_from(["a", "run-id", "x.y"]),
        st.text(alphabet="aZ0 =/-", max_size=5).filter(lambda value: value == value.strip()),
        max_size=3,
    ),
)
#: (content_type, metadata) arguments every backend refuses with ``InvalidArgumentError``.
BAD_ATTRIBUTES: list[tuple[object, object]] = [
    ("", None),
    (" text/plain", None),
    ("text/plain\n", None),
    ("t" * 257, None),
    (b"text/plain", None),
    (None, {"A": "upper case"}),
    (None, {"under_score": "x"}),
    (None, {"objstore-write": "reserved"}),
    (None, {"k": "line\nbreak"}),
    (None, {"k": "é"}),
    (None, {"k": " padded"}),
    (None, {"k": 1}),
    (None, [("k", "v")]),
    (None, {"k": "v" * 2048}),
    (None, {f"k{i}": "" for i in range(129)}),
]

DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")

BAD_KEYS_ALL = ["", "a\0b", "x" * 1025, "é" * 513, "\ud800"]
BAD_KEYS_DOT = ["./a", "a/./b", "a/..", "../x", "..", "."]
BAD_KEYS_PATH = ["/a", "a/", "a//b", *BAD_KEYS_DOT, "s" * 256]


def _without_dot_segment(key: str) -> bool:
    return DOT_SEGMENT.search(key) is None


def _machine_keys(machine: object) -> st.SearchStrategy[str]:
    return cast("StoreComparison", machine).keys


#: A key of the machine's backend: path keys only, or any key S3 accepts.
KEYS = st.runner().flatmap(_machine_keys)


def data_source(kind: str, data: bytes) -> object:
    """``data`` as each kind of source ``write`` accepts."""
    if kind == "file":
        return io.BytesIO(data)
    if kind == "chunks":
        return iter([data[: len(data) // 2], b"", data[len(data) // 2 :]])
    return data


def fold(entries: Iterator[ObjectInfo | CommonPrefix]) -> list[tuple[str, bool]]:
    """(key, is common prefix) of listing entries, as the model gives them."""
    return [(entry.key, isinstance(entry, CommonPrefix)) for entry in entries]


def fold_keys(entries: Iterator[str | CommonPrefix]) -> list[tuple[str, bool]]:
    """(key, is common prefix) of ``list_keys`` entries, as the model gives them."""
    return [(entry, False) if isinstance(entry, str) else (entry.key, True) for entry in entries]


@contextlib.contextmanager
def raises(expected: type[BaseException]) -> Iterator[list[BaseException]]:
    """Require the block to raise ``expected``; the list receives the exception."""
    caught: list[BaseException] = []
    try:
        yield caught
    except expected as exc:
        caught.append(exc)
    else:
        raise AssertionError(f"{expected.__name__} was not raised")


class StoreComparison(RuleBasedStateMachine):
    """Random operations on a fresh store and on the model; results must agree.

    A subclass sets ``factory`` (fresh, empty stores) and ``capabilities``; each
    example's store is closed when it ends.
    """

    factory: ClassVar[StorageFactory]
    capabilities: ClassVar[Capabilities]

    def __init__(self) -> None:
        super().__init__()
        capabilities = type(self).capabilities
        self.storage: Storage = type(self).factory()
        self.model = StoreModel(tree=capabilities.tree)
        self.keys: st.SearchStrategy[str] = PATH_KEYS
        if not capabilities.path_keys:
            flat = FLAT_KEYS if capabilities.dot_segments else FLAT_KEYS.filter(_without_dot_segment)
            self.keys = st.one_of(PATH_KEYS, flat)
        self.stale_etags: list[str] = ["0-0-0", "d41d8cd98f00b204e9800998ecf8427e"]

    def expect_write(
        self,
        key: str,
        *,
        create: bool = False,
        etag: str | None = None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> type[Exception] | None:
        if not (attributes.is_default or self.capabilities.metadata):
            return UnsupportedError
        if (create or etag is not None) and not self.capabilities.conditional_writes:
            return InvalidArgumentError
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

    def store(self, key: str, data: bytes, etag: str, attributes: Attributes = DEFAULT_ATTRIBUTES) -> None:
        if key in self.model.etags:
            self.stale_etags.append(self.model.etags[key])
        self.model.objects[key] = data
        self.model.etags[key] = etag
        self.model.attributes[key] = attributes

    def expected_info(self, key: str, info: ObjectInfo, *, listed: bool = False) -> ObjectInfo:
        """The info the store must give for ``key`` (its time taken from ``info``)."""
        attributes = self.model.attributes[key]
        told = self.capabilities.listed_metadata if listed else self.capabilities.metadata
        return ObjectInfo(
            key,
            len(self.model.objects[key]),
            info.last_modified,
            self.model.etags[key],
            attributes.content_type if told else None,
            attributes.metadata if told else None,
        )

    def attempt_write(
        self, key: str, data: object, expected: type[Exception] | None, **options: object
    ) -> str:
        """Write, and require the ``expected`` error or success; the etag, or "" after an error."""
        if expected is None:
            etag = self.storage.write(key, data, **options)  # type: ignore[arg-type]
            assert isinstance(etag, str) and etag
            return etag
        with raises(expected):
            self.storage.write(key, data, **options)  # type: ignore[arg-type]
        return ""

    @rule(
        key=KEYS,
        data=DATA,
        kind=st.sampled_from(["bytes", "file", "chunks"]),
        persist=st.booleans(),
        given=ATTRIBUTES,
    )
    def write(
        self, key: str, data: bytes, kind: str, persist: bool, given: tuple[str | None, dict[str, str] | None]
    ) -> None:
        content_type, metadata = given
        attributes = Attributes.checked(content_type, metadata)
        expected = self.expect_write(key, attributes=attributes)
        etag = self.attempt_write(
            key,
            data_source(kind, data),
            expected,
            persist=persist,
            content_type=content_type,
            metadata=metadata,
        )
        if expected is None:
            self.store(key, data, etag, attributes)

    @rule(key=KEYS, bad=st.sampled_from(BAD_ATTRIBUTES))
    def bad_attributes(self, key: str, bad: tuple[object, object]) -> None:
        """Attributes against the rules are refused, naming the value; nothing changes."""
        content_type, metadata = bad
        with raises(InvalidArgumentError) as caught:
            self.storage.write(key, b"x", content_type=content_type, metadata=metadata)  # type: ignore[arg-type]
        assert not isinstance(caught[0], UnsupportedError)
        if key in self.model.objects:
            assert self.storage.stat(key).etag == self.model.etags[key]

    @rule(key=KEYS, data=DATA, cut=st.integers(0, 70), kind=st.sampled_from(["bytes", "file", "chunks"]))
    def write_sized(self, key: str, data: bytes, cut: int, kind: str) -> None:
        if cut > len(data):
            with raises(SizeMismatchError):
                self.storage.write(key, data_source(kind, data), size=cut)  # type: ignore[arg-type]
            return
        expected = self.expect_write(key)
        etag = self.attempt_write(key, data_source(kind, data), expected, size=cut)
        if expected is None:
            self.store(key, data[:cut], etag)

    @rule(key=KEYS, data=DATA, content_type=ATTRIBUTES.map(lambda given: given[0]))
    def create(self, key: str, data: bytes, content_type: str | None) -> None:
        attributes = Attributes.checked(content_type, None)
        expected = self.expect_write(key, create=True, attributes=attributes)
        etag = self.attempt_write(key, data, expected, if_none_match=True, content_type=content_type)
        if expected is None:
            self.store(key, data, etag, attributes)

    @rule(key=KEYS, data=DATA, stale=st.booleans(), pick=st.integers(0, 1000))
    def replace(self, key: str, data: bytes, stale: bool, pick: int) -> None:
        if stale or key not in self.model.etags:
            etag = self.stale_etags[pick % len(self.stale_etags)]
        else:
            etag = self.model.etags[key]
        expected = self.expect_write(key, etag=etag)
        new_etag = self.attempt_write(key, data, expected, if_match=etag)
        if expected is None:
            self.store(key, data, new_etag)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.storage.delete(key)
        self.model.remove(key)

    @rule(keys=st.lists(KEYS, max_size=4))
    def delete_many(self, keys: list[str]) -> None:
        self.storage.delete_many(keys)
        for key in keys:
            self.model.remove(key)

    @rule(src=KEYS, dst=KEYS, pick=st.none() | st.integers(0, 1000), to_itself=st.booleans())
    def copy(self, src: str, dst: str, pick: int | None, to_itself: bool) -> None:
        """Copy ``src`` (with ``pick``, a stored object) to ``dst``, or ``to_itself``."""
        if pick is not None and self.model.objects:
            src = sorted(self.model.objects)[pick % len(self.model.objects)]
        if to_itself:
            dst = src
        if src not in self.model.objects:
            with raises(NotExistError):
                self.storage.copy(src, dst)
        elif dst == src:  # changes nothing: the current etag stays
            assert self.storage.copy(src, dst) == self.model.etags[src]
        elif self.model.conflicts(dst):
            with raises(KeyConflictError):
                self.storage.copy(src, dst)
        else:
            etag = self.storage.copy(src, dst)
            self.store(dst, self.model.objects[src], etag, self.model.attributes[src])

    @rule(key=KEYS, pick=st.integers(0, 1000))
    def read(self, key: str, pick: int) -> None:
        """Read ``key`` whole, pinned to its version and to another one (with ``if_match``), and stat it."""
        other = self.stale_etags[pick % len(self.stale_etags)]
        if key not in self.model.objects:
            with raises(NotExistError):
                self.storage.read(key)
            with raises(NotExistError):
                self.storage.read(key, if_match=other)
            assert not self.storage.exists(key)
            with raises(NotExistError):
                self.storage.stat(key)
            return
        with self.storage.read(key) as stream:
            assert stream.read() == self.model.objects[key]
        with self.storage.read(key, start=1, if_match=self.model.etags[key]) as stream:
            assert stream.read() == self.model.objects[key][1:]
        if other != self.model.etags[key]:
            with raises(ObjectChangedError):
                self.storage.read_range(key, 0, 1, if_match=other)
        info = self.storage.stat(key)
        assert info == self.expected_info(key, info)
        assert info.last_modified.tzinfo == UTC
        assert self.storage.exists(key)

    @rule(key=KEYS, pick=st.none() | st.integers(0, 1000), data=st.data())
    def read_ranges(self, key: str, pick: int | None, data: st.DataObject) -> None:
        """Ranges of ``key`` (with ``pick``, a stored object), as streams, with seeks, and as bytes."""
        if pick is not None and self.model.objects:
            key = sorted(self.model.objects)[pick % len(self.model.objects)]
        offsets = st.integers(0, 72)
        ranges = data.draw(st.lists(st.tuples(offsets, offsets), min_size=1, max_size=4))
        if key not in self.model.objects:
            with raises(NotExistError):
                self.storage.read_ranges(key, ranges)
            return
        body = self.model.objects[key]
        assert self.storage.read_ranges(key, ranges) == [body[start:end] for start, end in ranges]
        start, end = ranges[0]
        whole = data.draw(st.booleans())
        part = body if whole else body[start:end]
        with (self.storage.read(key) if whole else self.storage.read(key, start=start, end=end)) as stream:
            for seek, count in data.draw(st.lists(st.tuples(offsets, offsets), max_size=3)):
                assert stream.seek(seek) == seek
                assert stream.read(count) == part[seek : seek + count]
                assert stream.tell() == seek + len(part[seek : seek + count])

    @rule(data=st.data(), recursive=st.booleans())
    def list(self, data: st.DataObject, recursive: bool) -> None:
        known = sorted(self.model.objects) or ["a"]
        cut_of = data.draw(st.sampled_from(known))
        prefix = data.draw(st.sampled_from(["", cut_of[: len(cut_of) // 2], cut_of, cut_of + "/"]))
        start_after = data.draw(
            st.sampled_from(["", prefix, cut_of, cut_of[:-1] or "a", cut_of.rsplit("/", 1)[0] + "/"])
        )
        expected = self.model.listing(prefix, start_after, recursive)
        got = list(self.storage.list(prefix, start_after=start_after, recursive=recursive))
        assert fold(iter(got)) == expected
        keys = self.storage.list_keys(prefix, start_after=start_after, recursive=recursive)
        assert fold_keys(keys) == expected
        for entry in got:
            if isinstance(entry, ObjectInfo):
                assert entry == self.expected_info(entry.key, entry, listed=True)

    @rule(
        key=st.sampled_from(BAD_KEYS_ALL),
        operation=st.sampled_from(["write", "read", "stat", "delete", "copy", "exists"]),
    )
    def bad_key(self, key: str, operation: str) -> None:
        self.refuse(key, operation)

    @precondition(lambda self: self.capabilities.path_keys)
    @rule(key=st.sampled_from(BAD_KEYS_PATH), operation=st.sampled_from(["write", "read", "stat", "delete"]))
    def bad_path_key(self, key: str, operation: str) -> None:
        self.refuse(key, operation)

    @precondition(lambda self: not (self.capabilities.path_keys or self.capabilities.dot_segments))
    @rule(key=st.sampled_from(BAD_KEYS_DOT), operation=st.sampled_from(["write", "read", "stat", "delete"]))
    def bad_dot_key(self, key: str, operation: str) -> None:
        self.refuse(key, operation)

    def refuse(self, key: str, operation: str) -> None:
        calls: dict[str, Callable[[], object]] = {
            "write": lambda: self.storage.write(key, b"x"),
            "read": lambda: self.storage.read(key),
            "stat": lambda: self.storage.stat(key),
            "delete": lambda: self.storage.delete(key),
            "copy": lambda: self.storage.copy("a", key),
            "exists": lambda: self.storage.exists(key),
        }
        with raises(InvalidKeyError) as caught:
            calls[operation]()
        assert repr(key)[:40].strip("'\"")[:20] in str(caught[0])

    @invariant()
    def same_objects(self) -> None:
        assert fold(self.storage.list()) == self.model.listing("", "", True)

    def teardown(self) -> None:
        self.storage.close()


def conformance_settings(max_examples: int = 100, step_count: int = 30) -> settings:
    """Settings for :func:`check_storage`: no deadline (backends may be remote), on the loaded profile."""
    return settings(
        max_examples=max_examples,
        stateful_step_count=step_count,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def check_storage(
    factory: StorageFactory, capabilities: Capabilities, *, settings: settings | None = None
) -> None:
    """Compare fresh stores from ``factory`` with the model; raise on the first difference.

    Every store the factory makes is closed once its example ends.
    """
    machine = type(
        StoreComparison.__name__,
        (StoreComparison,),
        {"factory": staticmethod(factory), "capabilities": capabilities},
    )
    run_state_machine_as_test(  # type: ignore[no-untyped-call, unused-ignore]
        machine, settings=settings or conformance_settings()
    )
