"""Listing order and bounded memory in large folders."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import CommonPrefix, PosixStorage, Storage, _dirscan
from objstore.posixflat import PosixFlatStorage


def test_sorted_entries_in_several_passes(tmp_path: os.PathLike[str]) -> None:
    names = [f"n{i:03d}" for i in range(57)]
    for name in reversed(names):
        open(os.path.join(tmp_path, name), "wb").close()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for limit in (1, 2, 5, 56, 57, 58, 1000):
            got = list(_dirscan.sorted_entries(fd, lambda entry: entry.name, lambda _: True, limit))
            assert got == names
    finally:
        os.close(fd)


@settings(max_examples=30)
@given(
    keys=st.sets(st.text(alphabet="ab-0/", min_size=1, max_size=5), min_size=1, max_size=40),
    limit=st.integers(1, 4),
)
def test_flat_listing_is_bounded_and_ordered(
    tmp_path_factory: pytest.TempPathFactory, keys: set[str], limit: int
) -> None:
    storage = PosixFlatStorage(tmp_path_factory.mktemp("flat"))
    for key in keys:
        storage.write(key, b"")
    previous = _dirscan.MAX_NAMES_PER_PASS
    _dirscan.MAX_NAMES_PER_PASS = limit
    try:
        assert [info.key for info in storage.list()] == sorted(keys, key=str.encode)
        assert list(storage.list_keys()) == sorted(keys, key=str.encode)
        levels = {key[: key.index("/") + 1] if "/" in key else key for key in keys}
        assert [entry.key for entry in storage.list(recursive=False)] == sorted(levels, key=str.encode)
        one_level = [key if isinstance(key, str) else key.key for key in storage.list_keys(recursive=False)]
        assert one_level == sorted(levels, key=str.encode)
    finally:
        _dirscan.MAX_NAMES_PER_PASS = previous


def test_one_level_listing_does_not_descend_further_than_needed(tmp_path: os.PathLike[str]) -> None:
    storage = PosixStorage(tmp_path)
    for i in range(30):
        storage.write(f"deep/{i:02d}/x", b"")
    storage.write("top", b"")
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: object, **kwargs: object) -> int:
        opened.append(path)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    os.open = counting_open  # type: ignore[assignment]
    try:
        assert list(storage.list(recursive=False)) == [CommonPrefix("deep/"), storage.stat("top")]
    finally:
        os.open = real_open
    assert opened.count("deep") == 1 and len(opened) <= 4


def test_resuming_after_last_entry(storage: Storage) -> None:
    keys = ["a/b/c", "a/b/d", "a/c", "a-b", "a0", "b/x", "b/y/z", "c"]
    for key in keys:
        storage.write(key, b"")
    for recursive in (True, False):
        full = [entry.key for entry in storage.list(recursive=recursive)]
        assert full == [
            entry if isinstance(entry, str) else entry.key
            for entry in storage.list_keys(recursive=recursive)
        ]
        resumed: list[str] = []
        after = ""
        while True:
            entries = storage.list(start_after=after, recursive=recursive)
            page = [entry.key for entry in itertools.islice(entries, 2)]
            if not page:
                break
            resumed += page
            after = page[-1]
        assert resumed == full
