"""Content types and user metadata: kept with each version on every backend, checked before sending."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from objstore import InvalidArgumentError, Metadata, ObjectInfo, PosixStorage, Storage, UnsupportedError
from objstore.attributes import (
    DEFAULT_CONTENT_TYPE,
    MAX_METADATA_BYTES,
    MAX_METADATA_ENTRIES,
    Attributes,
)
from objstore.posixflat import PosixFlatStorage

PARQUET = "application/vnd.apache.parquet"


def _attributes(info: ObjectInfo) -> tuple[str | None, Metadata | None]:
    return info.content_type, info.metadata


def test_written_attributes_are_stat_and_listed(storage: Storage) -> None:
    storage.write("t/a", b"x", content_type=PARQUET, metadata={"run-id": "r1", "rows": "10"})
    storage.write("t/b", b"y")
    assert _attributes(storage.stat("t/a")) == (PARQUET, {"run-id": "r1", "rows": "10"})
    assert _attributes(storage.stat("t/b")) == (DEFAULT_CONTENT_TYPE, {})
    listed = {info.key: _attributes(info) for info in storage.list("t/") if isinstance(info, ObjectInfo)}
    if storage.lists_metadata:
        assert listed == {"t/a": _attributes(storage.stat("t/a")), "t/b": (DEFAULT_CONTENT_TYPE, {})}
    else:
        assert listed == {"t/a": (None, None), "t/b": (None, None)}


def test_a_new_version_replaces_the_attributes(storage: Storage) -> None:
    first = storage.write("k", b"1", content_type="text/plain", metadata={"a": "1"})
    second = storage.write("k", b"2", if_match=first, metadata={"b": "2"})
    assert _attributes(storage.stat("k")) == (DEFAULT_CONTENT_TYPE, {"b": "2"})
    storage.write("k", b"3", if_match=second)
    assert _attributes(storage.stat("k")) == (DEFAULT_CONTENT_TYPE, {})
    storage.write("new", b"n", if_none_match=True, content_type="text/csv")
    assert storage.stat("new").content_type == "text/csv"


def test_a_copy_carries_the_attributes(storage: Storage) -> None:
    storage.write("src", b"data", content_type="text/csv", metadata={"origin": "x"})
    storage.copy("src", "dst")
    assert _attributes(storage.stat("dst")) == ("text/csv", {"origin": "x"})
    assert storage.read_bytes("dst") == b"data"


def test_a_streamed_multipart_write_keeps_them(s3_endpoint, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    storage = s3_endpoint.storage(s3_bucket(), part_size=5 << 20)
    chunks = (bytes([i]) * (1 << 20) for i in range(11))  # 11 MiB: three parts
    storage.write("big", chunks, content_type=PARQUET, metadata={"parts": "3"})
    info = storage.stat("big")
    assert info.etag.endswith("-3") and _attributes(info) == (PARQUET, {"parts": "3"})
    raw = s3_endpoint.boto().head_object(Bucket=storage.bucket, Key="big")["Metadata"]
    assert set(raw) == {"parts", "objstore-part-size"}  # objstore's own is not shown


def test_objstores_own_metadata_is_not_shown(s3_endpoint, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    storage = s3_endpoint.storage(s3_bucket())
    storage.write("k", b"x", if_none_match=True, metadata={"mine": "1"})  # carries a write id
    raw = s3_endpoint.boto().head_object(Bucket=storage.bucket, Key="k")["Metadata"]
    assert set(raw) == {"mine", "objstore-write"}
    assert storage.stat("k").metadata == {"mine": "1"}


# -- the rules ---------------------------------------------------------------------

_VALUE_CHARS = st.characters(min_codepoint=0, max_codepoint=0x7F) | st.sampled_from("é日\u2028")


@given(key=st.text(_VALUE_CHARS, max_size=12), value=st.text(_VALUE_CHARS, max_size=12))
def test_metadata_is_accepted_exactly_by_the_rules(key: str, value: str) -> None:
    valid_key = bool(key) and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-." for c in key)
    valid_key = valid_key and not key.startswith("objstore-")
    valid_value = all(" " <= c <= "~" for c in value) and value == value.strip()
    if valid_key and valid_value:
        assert Attributes.checked(None, {key: value}).metadata == {key: value}
        return
    with pytest.raises(InvalidArgumentError) as caught:
        Attributes.checked(None, {key: value})
    assert repr(key if not valid_key else value)[:20] in str(caught.value)


@given(content_type=st.text(_VALUE_CHARS, max_size=20))
def test_content_types_are_accepted_exactly_by_the_rules(content_type: str) -> None:
    valid = bool(content_type) and all(" " <= c <= "~" for c in content_type)
    if valid and content_type == content_type.strip():
        assert Attributes.checked(content_type, None).content_type == content_type
        return
    with pytest.raises(InvalidArgumentError, match="content_type"):
        Attributes.checked(content_type, None)


def test_the_size_limits_are_s3s() -> None:
    at_limit = {"k": "v" * (MAX_METADATA_BYTES - 1)}
    assert Attributes.checked(None, at_limit).metadata == at_limit
    with pytest.raises(InvalidArgumentError, match=f"{MAX_METADATA_BYTES + 1} bytes"):
        Attributes.checked(None, {"k": "v" * MAX_METADATA_BYTES})
    many = {f"k{i}": "" for i in range(MAX_METADATA_ENTRIES)}
    assert len(Attributes.checked(None, many).metadata) == MAX_METADATA_ENTRIES
    with pytest.raises(InvalidArgumentError, match=f"{MAX_METADATA_ENTRIES + 1} entries"):
        Attributes.checked(None, {**many, "one-more": ""})


def test_bad_attributes_change_nothing(storage: Storage) -> None:
    etag = storage.write("k", b"old", metadata={"a": "1"})
    with pytest.raises(InvalidArgumentError, match="'Run-Id'"):
        storage.write("k", b"new", metadata={"Run-Id": "x"})
    with pytest.raises(InvalidArgumentError, match="content_type"):
        storage.write("other", b"new", content_type="text/plain\r\nX-Injected: 1")
    assert storage.stat("k").etag == etag and storage.read_bytes("k") == b"old"
    assert not storage.exists("other")


def test_metadata_is_immutable_and_hashable() -> None:
    metadata = Metadata({"a": "1"})
    assert metadata == {"a": "1"} and metadata == {"a": "1"} and metadata != {"a": "2"}
    assert hash(metadata) == hash(Metadata({"a": "1"}))
    with pytest.raises(TypeError):
        metadata["b"] = "2"  # type: ignore[index]
    info = ObjectInfo("k", 1, datetime.now(UTC), "e", "text/plain", {"a": "1"})
    assert isinstance(info.metadata, Metadata) and hash(info) == hash(attrs.evolve(info))
    assert pickle.loads(pickle.dumps(info)) == info


# -- posix: the attributes travel with the version -----------------------------------


def _alternate(root: str, stop_at: float) -> None:
    storage = PosixStorage(root)
    n = 0
    while time.monotonic() < stop_at and n < 20_000:
        size = 1 + n % 2
        storage.write("k", b"x" * size, content_type=f"text/size-{size}", metadata={"size": str(size)})
        n += 1


@pytest.mark.slow
def test_readers_never_see_the_attributes_of_another_version(tmp_path: Path) -> None:
    storage = PosixStorage(tmp_path)
    storage.write("k", b"x", content_type="text/size-1", metadata={"size": "1"})
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=_alternate, args=(str(tmp_path), time.monotonic() + 3.0))
    writer.start()
    checked = 0
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and checked < 50_000:
            for info in [storage.stat("k"), *storage.list()]:
                assert isinstance(info, ObjectInfo)
                assert info.content_type == f"text/size-{info.size}"
                assert info.metadata == {"size": str(info.size)}
                checked += 1
    finally:
        writer.join(10)
    assert writer.exitcode == 0 and checked > 100


_RAMFS_WRITE = textwrap.dedent(
    """
    import importlib, os, sys
    from objstore import UnsupportedError
    module, name, root = sys.argv[1:]
    store = getattr(importlib.import_module(module), name)(root)
    store.write("plain", b"kept")
    try:
        store.write("k", b"x", metadata={"a": "1"})
    except UnsupportedError as exc:
        print("refused:", exc)
    print("exists:", store.exists("k"), "plain:", store.read_bytes("plain"))
    print("temporaries:", os.listdir(os.path.join(root, "tmp")))
    """
)


@pytest.mark.parametrize("backend_class", [PosixStorage, PosixFlatStorage])
def test_a_filesystem_without_extended_attributes_refuses_them(tmp_path: Path, backend_class: type) -> None:
    """On ramfs (no user xattrs), mounted in a user namespace of a child process."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a ramfs in a user namespace")
    mount = tmp_path / "ramfs"
    mount.mkdir()
    backend = f"{backend_class.__module__} {backend_class.__name__}"
    shell = f'mount -t ramfs none "{mount}" && exec "{sys.executable}" -c "$0" {backend} "{mount}/store"'
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", shell, _RAMFS_WRITE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    if done.returncode != 0 and "mount" in done.stderr and "refused" not in done.stdout:
        pytest.skip(f"cannot mount a ramfs in a user namespace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    assert "refused: the filesystem of" in done.stdout
    assert "cannot keep a content type or metadata" in done.stdout
    assert "exists: False plain: b'kept'" in done.stdout
    assert "temporaries: []" in done.stdout


def test_a_backend_without_metadata_refuses_them(tmp_path: Path) -> None:
    from fsspec.implementations.local import LocalFileSystem

    from objstore import FsspecStorage

    storage = FsspecStorage(LocalFileSystem(), str(tmp_path))
    with pytest.raises(UnsupportedError, match="supports_metadata"):
        storage.write("k", b"x", content_type="text/plain")
    assert not storage.exists("k")
