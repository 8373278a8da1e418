"""The posixflat escaping is a bijection that keeps key order and short file names."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from objstore.keys import MAX_KEY_BYTES
from objstore.posixflat import PosixFlatStorage, escape, key_to_names, names_to_key, unescape

KEYS = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), min_size=1).filter(
    lambda key: len(key.encode()) <= MAX_KEY_BYTES
)


@given(KEYS)
def test_round_trip(key: str) -> None:
    assert unescape(escape(key)) == key
    assert names_to_key(key_to_names(key)) == key


@given(KEYS)
def test_names_are_safe_and_short(key: str) -> None:
    names = key_to_names(key)
    for name in names:
        assert "/" not in name and "\0" not in name
        assert name not in ("", ".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 255
    assert all(name.endswith("%") for name in names[:-1])
    assert not names[-1].endswith("%")


@given(KEYS, KEYS)
def test_escaping_keeps_order(a: str, b: str) -> None:
    assert (a.encode() < b.encode()) == (escape(a).encode() < escape(b).encode())


def test_long_keys_nest(tmp_path: os.PathLike[str]) -> None:
    storage = PosixFlatStorage(tmp_path)
    keys = ["/" * 341, "é" * 512, "a" * 60, "a" * 61, "a" * 60 + "/", "a"]
    for key in keys:
        storage.write(key, key.encode())
    assert [info.key for info in storage.list()] == sorted(keys, key=str.encode)
    for key in keys:
        assert storage.read_bytes(key) == key.encode()


def test_prefix_is_matched_against_keys_not_file_names(tmp_path: os.PathLike[str]) -> None:
    # The first run of this key, escaped, starts with the key itself ("%" becomes "%25"),
    # so a prefix written like the escaped run must still not match it.
    head = "%" + "25" * 29 + "2"
    storage = PosixFlatStorage(tmp_path)
    storage.write(head + "zz", b"")
    storage.write(head + "25x", b"")
    escaped_head = key_to_names(head + "zz")[0][:-1]
    assert escaped_head.startswith(head)
    for prefix in (escaped_head, escaped_head[:-1], head, head + "2"):
        expected = sorted(key for key in (head + "zz", head + "25x") if key.startswith(prefix))
        assert [info.key for info in storage.list(prefix)] == expected
        assert list(storage.list_keys(prefix)) == expected
