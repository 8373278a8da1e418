"""The posixflat backend: any key, escaped into file names (internal, not configurable).

The bijection from a key to a path under ``<root>/data``:

1. Each character of the key from ``%`` (0x25) to ``/`` (0x2F) becomes ``%`` and its two
   upper-case hex digits (``/`` becomes ``%2F``, ``.`` becomes ``%2E``); every other
   character stays. The result never contains ``/``, never starts with ``.``, and sorts
   as the key does (the escaped characters keep their order and stay below ``0``).
2. The escaped key is cut into runs of 60 characters (an escape counts as one). Every
   run but the last names a folder, with ``%`` appended; the last names the file. A name
   is thus at most 4 x 60 + 1 = 241 bytes, and a folder never clashes with a file.

So ``a`` and ``a/b`` (``a%2Fb``) are two files side by side, and so are ``a//b`` and ``a/``.
"""

from __future__ import annotations

import os
import re

from ._filetree import FileTreeStorage, is_utf8

RUN_LENGTH = 60
_ESCAPED = re.compile(r"[%-/]")
_TOKEN = re.compile(r"%[0-9A-F]{2}|[^%]", re.DOTALL)
_NAME = re.compile(r"(?:%2[5-9A-F]|[^%\x25-\x2f])+%?", re.DOTALL)


def escape(key: str) -> str:
    """The key with every character from ``%`` to ``/`` escaped."""
    return _ESCAPED.sub(lambda m: f"%{ord(m.group()):02X}", key)


def unescape(escaped: str) -> str:
    """The inverse of :func:`escape`."""
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), escaped)


def key_to_names(key: str) -> list[str]:
    """The names leading from the data folder to the key's file."""
    tokens = _TOKEN.findall(escape(key))
    runs = ["".join(tokens[i : i + RUN_LENGTH]) for i in range(0, len(tokens), RUN_LENGTH)]
    return [run + "%" for run in runs[:-1]] + runs[-1:]


def names_to_key(names: list[str]) -> str:
    """The inverse of :func:`key_to_names`."""
    return unescape("".join(name.removesuffix("%") for name in names))


class PosixFlatStorage(FileTreeStorage):
    """Objects under ``<root>/data`` in a true flat namespace: any key, escaped."""

    def _path(self, key: str) -> list[str]:
        return key_to_names(key)

    def _sort_key(self, entry: os.DirEntry[str]) -> str | None:
        name = entry.name
        if not _NAME.fullmatch(name) or not is_utf8(name):
            return None
        is_folder = name.endswith("%")
        if is_folder and entry.is_dir(follow_symlinks=False):
            return name
        if not is_folder and entry.is_file(follow_symlinks=False):
            return name
        return None

    def _child(self, scope: str, sort_key: str) -> tuple[str, str, str | None]:
        if sort_key.endswith("%"):
            inner = scope + sort_key[:-1]
            return sort_key, unescape(inner), inner
        return sort_key, unescape(scope + sort_key), None

    def _start(self, prefix: str) -> tuple[list[str], str, str] | None:
        if not prefix:
            return [], "", ""
        names = key_to_names(prefix)
        # A key starting with the prefix shares its complete runs, except the last one
        # when the prefix ends exactly at a run's end (that run may be a file).
        depth = (len(_TOKEN.findall(escape(prefix))) - 1) // RUN_LENGTH
        folders = names[:depth]
        scope = "".join(name[:-1] for name in folders)
        return folders, scope, unescape(scope)
