"""The conformance check of ``Storage.download``: whole objects to local files, atomically."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NotExistError, StorageIOError
from ..storage import Storage
from .machine import raises

#: Sizes downloaded: empty, small, and over 5 MiB (more than one part of S3's smallest part size).
DOWNLOAD_SIZES = (0, 1, 1000, (5 << 20) + 3)


def _pattern(size: int, seed: int) -> bytes:
    """``size`` bytes that differ at every offset modulo 251 and between seeds."""
    block = bytes((index * 7 + seed) % 251 for index in range(251))
    return (block * (size // len(block) + 1))[:size]


def check_download(storage: Storage, folder: Path) -> None:
    """Require ``storage.download`` to write each object whole, with the info of its version,
    to replace an existing file, and to leave a folder as it was when it fails."""
    for seed, size in enumerate(DOWNLOAD_SIZES):
        key = f"download/{size}"
        data = _pattern(size, seed)
        storage.write(key, data)
        target = folder / f"object-{size}"
        info = storage.download(key, target)
        assert target.read_bytes() == data, f"download of {size} bytes differs"
        assert info == storage.stat(key), f"download returned {info}, stat says {storage.stat(key)}"
    existing = folder / "existing"
    existing.write_bytes(b"before")
    replaced = storage.download(key, str(existing))  # a str path too, over a file
    assert existing.read_bytes() == data and replaced.size == len(data)
    existing.write_bytes(b"before")
    before = sorted(os.listdir(folder))
    with raises(NotExistError):
        storage.download("download/missing", existing)
    assert existing.read_bytes() == b"before", "a failed download changed the target"
    assert sorted(os.listdir(folder)) == before, "a failed download left a file behind"
    with raises(StorageIOError):
        storage.download(key, folder / "no-such-folder" / "file")
    assert sorted(os.listdir(folder)) == before
