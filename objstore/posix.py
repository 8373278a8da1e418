"""The posix backend: key ``a/b/c`` is the file ``<root>/data/a/b/c``, unescaped."""

from __future__ import annotations

import os

from ._filetree import FileTreeStorage, is_utf8
from .keys import check_posix_key


class PosixStorage(FileTreeStorage):
    """Objects as plain files under ``<root>/data``, readable by a person.

    Keys are file paths, so ``a`` and ``a/b`` cannot both exist (as on MinIO): the second
    write raises ``KeyConflictError`` and leaves the store unchanged.
    """

    def check_key(self, key: object) -> str:
        return check_posix_key(key)

    def _path(self, key: str) -> list[str]:
        return key.split("/")

    def _sort_key(self, entry: os.DirEntry[str]) -> str | None:
        name = entry.name
        if not is_utf8(name):
            return None  # not a name objstore writes
        if entry.is_dir(follow_symlinks=False):
            return name + "/"  # sorts as the keys inside it do
        if entry.is_file(follow_symlinks=False):
            return name
        return None

    def _child(self, scope: str, sort_key: str) -> tuple[str, str, str | None]:
        key = scope + sort_key
        if sort_key.endswith("/"):
            return sort_key[:-1], key, key
        return sort_key, key, None

    def _start(self, prefix: str) -> tuple[list[str], str, str] | None:
        folder = prefix[: prefix.rfind("/") + 1]
        names = folder.split("/")[:-1]
        if any(name in ("", ".", "..") for name in names):
            return None  # no key lies there
        return names, folder, folder
