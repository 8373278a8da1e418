"""Bad input gets a typed error that names it, and loses nothing; keys never leave the root."""

from __future__ import annotations

import io
import os

import pytest

from objstore import (
    AlreadyExistsError,
    CommonPrefix,
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    NotExistError,
    ObjstoreError,
    PosixStorage,
    PreconditionFailedError,
    SizeMismatchError,
    Storage,
    StorageIOError,
)
from objstore.posixflat import PosixFlatStorage


def test_error_hierarchy() -> None:
    assert issubclass(NotExistError, FileNotFoundError)
    assert issubclass(AlreadyExistsError, FileExistsError)
    assert issubclass(InvalidKeyError, ValueError)
    for error in (
        NotExistError,
        AlreadyExistsError,
        InvalidKeyError,
        KeyConflictError,
        PreconditionFailedError,
    ):
        assert issubclass(error, ObjstoreError)


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "not empty"),
        ("a\0b", "NUL"),
        ("k" * 1025, "at most 1024"),
        ("\udcff", "surrogate"),
    ],
)
def test_invalid_key_names_key_and_rule(storage: Storage, key: str, rule: str) -> None:
    storage.write("kept", b"old")
    with pytest.raises(InvalidKeyError) as caught:
        storage.write(key, b"new")
    assert rule in str(caught.value)
    assert caught.value.key == key
    assert [info.key for info in storage.list()] == ["kept"]


@pytest.mark.parametrize("method", ["list", "list_keys"])
@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"prefix": b"a"}, "b'a'"),
        ({"prefix": "a\0"}, "'a\\x00'"),
        ({"start_after": 7}, "start_after"),
        ({"start_after": "\udcff"}, "surrogate"),
    ],
)
def test_listing_refuses_bad_prefixes(
    storage: Storage, method: str, arguments: dict[str, object], named: str
) -> None:
    storage.write("kept", b"old")
    with pytest.raises(InvalidKeyError) as caught:
        getattr(storage, method)(**arguments)
    assert named in str(caught.value)
    assert [info.key for info in storage.list()] == ["kept"]


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("/etc/passwd", 'start with "/"'),
        ("a/", 'end with "/"'),
        ("a//b", "segment"),
        ("../escape", "segment"),
        ("a/../../escape", "segment"),
        ("./a", "segment"),
        ("x" * 256, "255"),
    ],
)
def test_posix_refuses_keys_before_touching_disk(tmp_path: os.PathLike[str], key: str, rule: str) -> None:
    storage = PosixStorage(tmp_path)
    for call in (
        lambda: storage.write(key, b"x"),
        lambda: storage.read(key),
        lambda: storage.stat(key),
        lambda: storage.delete(key),
        lambda: storage.copy(key, "b"),
    ):
        with pytest.raises(InvalidKeyError, match=rule):
            call()
    assert sorted(os.listdir(os.path.join(tmp_path, "data"))) == []


def test_size_mismatch_keeps_old_object(storage: Storage) -> None:
    storage.write("k", b"old")
    for source in (b"short", io.BytesIO(b"short"), iter([b"sh", b"ort"])):
        with pytest.raises(SizeMismatchError) as caught:
            storage.write("k", source, size=6)  # type: ignore[arg-type]
        assert (caught.value.expected, caught.value.got) == (6, 5)
        assert "'k'" in str(caught.value)
    assert storage.read_bytes("k") == b"old"


def test_failing_source_keeps_old_object(storage: Storage) -> None:
    storage.write("k", b"old")

    def broken() -> object:
        yield b"new data"
        raise OSError("the source broke")

    with pytest.raises(OSError, match="the source broke"):
        storage.write("k", broken())  # type: ignore[arg-type]
    assert storage.read_bytes("k") == b"old"
    assert [info.key for info in storage.list()] == ["k"]


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ("text", {}, "not str"),
        (b"x", {"size": -1}, "size"),
        (b"x", {"size": 1.5}, "size"),
        (42, {}, "not int"),
        (lambda: iter(["text"]), {}, "yielded str"),
        (lambda: io.StringIO("text"), {}, "binary mode"),
        (b"x", {"if_none_match": True, "if_match": "e"}, "exclude"),
        (b"x", {"if_match": ""}, "if_match"),
    ],
)
def test_bad_arguments_are_typed(
    storage: Storage, data: object, options: dict[str, object], message: str
) -> None:
    storage.write("k", b"old")
    with pytest.raises(InvalidArgumentError, match=message):
        storage.write("k", data() if callable(data) else data, **options)  # type: ignore[arg-type]
    assert storage.read_bytes("k") == b"old"


def test_missing_objects(storage: Storage) -> None:
    with pytest.raises(NotExistError, match="'nope'"):
        storage.read_bytes("nope")
    with pytest.raises(NotExistError):
        storage.stat("nope")
    with pytest.raises(NotExistError):
        storage.write("nope", b"x", if_match="some-etag")
    storage.delete("nope")
    storage.delete_many(["nope", "nope2"])
    assert not storage.exists("nope")


def test_conditional_writes(storage: Storage) -> None:
    etag = storage.write("k", b"one", if_none_match=True)
    with pytest.raises(AlreadyExistsError):
        storage.write("k", b"two", if_none_match=True)
    with pytest.raises(PreconditionFailedError):
        storage.write("k", b"two", if_match="not-" + etag)
    assert storage.read_bytes("k") == b"one"
    new = storage.write("k", b"two", if_match=etag)
    assert new != etag
    with pytest.raises(PreconditionFailedError):
        storage.write("k", b"three", if_match=etag)
    assert storage.read_bytes("k") == b"two"


def test_etag_follows_content(storage: Storage) -> None:
    etags = [storage.write("k", bytes([n]) * 10) for n in range(20)]
    assert len(set(etags)) == 20


def test_file_tree_etag_changes_with_every_version(tmp_path: os.PathLike[str]) -> None:
    """Even rewriting the same bytes at once gives a new etag, so if_match never hits an old version."""
    storage = PosixStorage(tmp_path)
    seen = set()
    for _ in range(50):
        seen.add(storage.write("k", b"same"))
        storage.delete("k")
    assert len(seen) == 50


def test_posix_key_conflicts_leave_store_unchanged(tmp_path: os.PathLike[str]) -> None:
    storage = PosixStorage(tmp_path)
    storage.write("a/b", b"inner")
    with pytest.raises(KeyConflictError, match="'a'"):
        storage.write("a", b"outer")
    storage.write("c", b"file")
    with pytest.raises(KeyConflictError, match="folder 'c'"):
        storage.write("c/d/e", b"below a file")
    with pytest.raises(KeyConflictError):
        storage.copy("c", "a")
    assert {info.key: storage.read_bytes(info.key) for info in storage.list()} == {
        "a/b": b"inner",
        "c": b"file",
    }
    storage.delete("a")  # a folder is not an object: nothing happens
    assert storage.read_bytes("a/b") == b"inner"
    storage.delete("a/b")
    assert os.listdir(os.path.join(tmp_path, "data")) == ["c"]  # the emptied folder went too
    storage.write("a", b"now a file")
    assert storage.read_bytes("a") == b"now a file"


def test_posix_never_follows_symlinks_out_of_root(tmp_path: os.PathLike[str]) -> None:
    outside = os.path.join(tmp_path, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret"), "wb") as file:
        file.write(b"secret")
    storage = PosixStorage(os.path.join(tmp_path, "store"))
    data = os.path.join(tmp_path, "store", "data")
    os.symlink(outside, os.path.join(data, "dirlink"))
    os.symlink(os.path.join(outside, "secret"), os.path.join(data, "filelink"))

    for key in ("dirlink/secret", "filelink"):
        with pytest.raises(NotExistError):
            storage.read_bytes(key)
        with pytest.raises(NotExistError):
            storage.stat(key)
        storage.delete(key)
    assert list(storage.list_keys()) == []
    with pytest.raises(KeyConflictError):
        storage.write("dirlink/new", b"x")
    storage.write("filelink", b"replaces the link, not its target")
    assert list(storage.list()) == [storage.stat("filelink")]
    assert list(storage.list_keys()) == ["filelink"]
    assert os.listdir(outside) == ["secret"]
    with open(os.path.join(outside, "secret"), "rb") as file:
        assert file.read() == b"secret"


def test_posix_listing_hides_foreign_entries(tmp_path: os.PathLike[str]) -> None:
    storage = PosixStorage(tmp_path)
    storage.write("a/b", b"x")
    data = os.path.join(tmp_path, "data")
    os.makedirs(os.path.join(data, "empty", "deeper"))
    os.mkfifo(os.path.join(data, "fifo"))
    with open(os.path.join(os.fsencode(data), b"bad\xffname"), "wb"):
        pass
    assert [entry.key for entry in storage.list(recursive=False)] == ["a/"]
    assert list(storage.list_keys(recursive=False)) == [CommonPrefix("a/")]
    for key in ("fifo", "empty"):
        with pytest.raises(NotExistError):
            storage.read_bytes(key)  # never blocks on the FIFO
        with pytest.raises(NotExistError):
            storage.read(key)
    assert [entry.key for entry in storage.list()] == ["a/b"]
    assert list(storage.list_keys()) == ["a/b"]
    storage.write("empty", b"the empty folders give way")
    assert storage.read_bytes("empty") == b"the empty folders give way"


def test_closing_twice_closes_nothing_else(tmp_path: os.PathLike[str]) -> None:
    storage = PosixStorage(tmp_path)
    storage.close()
    other = os.open(tmp_path, os.O_RDONLY)  # may reuse one of the store's fd numbers
    try:
        storage.close()
        os.fstat(other)  # still open
    finally:
        os.close(other)


@pytest.mark.parametrize("backend", [PosixStorage, PosixFlatStorage])
def test_file_read_stream_is_seekable_and_raises_objstore_errors(
    tmp_path: os.PathLike[str], backend: type[PosixStorage] | type[PosixFlatStorage]
) -> None:
    storage = backend(tmp_path)
    storage.write("a/obj", b"0123456789")
    with storage.read("a/obj") as stream:
        assert stream.read(3) == b"012"
        assert stream.seekable() and stream.tell() == 3
        assert stream.seek(-2, os.SEEK_END) == 8
        assert stream.read() == b"89"
        stream.seek(1)
        assert stream.read() == b"123456789"
    storage.write("a/big", bytes(100_000))
    for size in (50_000, -1):  # through readinto, then through readall
        with storage.read("a/big") as stream:
            assert stream.read(1) == b"\0"
            fd = stream.fileno()
            os.close(fd)  # the file fails under the stream, as a broken disk would
            with pytest.raises(StorageIOError, match="a/big") as caught:
                stream.read(size)
            assert isinstance(caught.value.__cause__, OSError)
            spare = os.open(os.devnull, os.O_RDONLY)  # so that closing the stream succeeds
            if spare != fd:
                os.dup2(spare, fd)
                os.close(spare)
