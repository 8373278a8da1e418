"""A storage client in its own process, for crash and concurrency tests.

``python -m tests.storage_worker SPEC MODE KEY WRITER COUNT``: SPEC is the JSON of
:func:`storage_spec`. Mode ``churn`` writes COUNT versions (0 = until killed) and
prints ``WRITING`` once the first write is under way; every version is self-checking
(see :func:`version`). Mode ``folders`` writes and deletes keys under KEY for COUNT
seconds (see :func:`churn_folders`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from objstore import S3Storage, Storage
from objstore.posix import PosixStorage
from objstore.posixflat import PosixFlatStorage

REPEATS = 64 * 1024


def version(writer: int, number: int) -> Iterator[bytes]:
    """A version's bytes, in chunks: one 16-byte line repeated, so a torn mix shows."""
    line = f"w{writer:03d}v{number:010d}\n".encode()
    for _ in range(16):
        yield line * (REPEATS // 16)


def check_version(data: bytes) -> tuple[int, int]:
    """(writer, number) of a complete version; raises AssertionError for a torn one."""
    line = data[:16]
    assert len(data) == 16 * REPEATS and data == line * REPEATS, f"torn object: {len(data)} bytes"
    return int(line[1:4]), int(line[5:15])


def storage_spec(storage: Storage) -> str:
    """What another process needs to open the same store."""
    if isinstance(storage, S3Storage):
        settings = storage._settings
        spec: dict[str, Any] = {"type": "s3", "bucket": storage.bucket, **settings}
    else:
        spec = {"type": type(storage).__name__, "root": storage.root}  # type: ignore[attr-defined]
    return json.dumps(spec)


def open_storage(spec_json: str) -> Storage:
    spec = json.loads(spec_json)
    kind = spec.pop("type")
    if kind == "s3":
        return S3Storage(spec.pop("endpoint"), spec.pop("bucket"), **spec)
    return {"PosixStorage": PosixStorage, "PosixFlatStorage": PosixFlatStorage}[kind](spec["root"])


def main(spec_json: str, mode: str, key: str, writer: int, count: int) -> None:
    storage = open_storage(spec_json)
    if mode == "folders":
        churn_folders(storage, key, writer, count)
        return
    assert mode == "churn"
    storage.write(key, announced(version(writer, 0)))
    number = 1
    while count == 0 or number < count:
        storage.write(key, version(writer, number))
        number += 1
    print("DONE", flush=True)


def churn_folders(storage: Storage, prefix: str, writer: int, seconds: int) -> None:
    """Write and delete keys of this writer in folders that other writers share and empty."""
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        keys = [f"{prefix}/{rounds % 3}/{part}/w{writer}" for part in range(3)]
        for key in keys:
            storage.write(key, key.encode())
        for key in keys:
            assert storage.read_bytes(key) == key.encode()
            storage.delete(key)
        rounds += 1
    print(f"ROUNDS {rounds}", flush=True)


def announced(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks, printing ``WRITING`` once the first one is handed over."""
    for index, chunk in enumerate(chunks):
        yield chunk
        if index == 0:
            print("WRITING", flush=True)
            time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
