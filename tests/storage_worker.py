"""A storage client in its own process, for crash and concurrency tests.

``python -m tests.storage_worker SPEC MODE KEY WRITER COUNT``: SPEC is the JSON of
:func:`storage_spec`. Mode ``churn`` writes COUNT versions (0 = until killed) and
prints ``WRITING`` once the first write is under way; every version is self-checking
(see :func:`version`). Mode ``folders`` writes and deletes keys under KEY for COUNT
seconds (see :func:`churn_folders`). Mode ``deep`` writes keys deep in new folders under
KEY, COUNT of them (0 = until killed), deleting every other one, and prints ``WRITING``
once the first is written (see :func:`churn_deep`).

Modes ``race`` and ``count`` open WRITER store objects on the same root, one thread
each, print ``READY`` and start when a line arrives on stdin: ``race`` tries a
create-only write of keys ``KEY/0`` to ``KEY/<COUNT-1>`` (see :func:`race_creates`),
``count`` adds COUNT to the counter ``KEY`` by compare-and-swap (see :func:`count_up`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from objstore import AlreadyExistsError, NotExistError, PreconditionFailedError, S3Storage, Storage
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
    if mode in ("race", "count"):
        stores = [open_storage(spec_json) for _ in range(writer)]
        race = functools.partial(race_creates, start=threading.Barrier(writer))
        in_threads(stores, race if mode == "race" else count_up, key, count)
        return
    storage = open_storage(spec_json)
    if mode == "folders":
        churn_folders(storage, key, writer, count)
        return
    if mode == "deep":
        churn_deep(storage, key, writer, count)
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


DEEP_LEVELS = 200


def deep_key(prefix: str, writer: int, number: int) -> str:
    """A key below many folders that no other key uses (about 200 on posix)."""
    return f"{prefix}/w{writer}/{number}/" + "/".join(["dd"] * DEEP_LEVELS) + "/obj"


def deep_data(key: str) -> bytes:
    """The data stored under a deep key: the key four times, so a torn object shows."""
    return key.encode() * 4


def churn_deep(storage: Storage, prefix: str, writer: int, count: int) -> None:
    """Write deep keys in new folders, deleting every other one; print ``KEPT key`` for the rest."""
    for number in itertools.count():
        if count and number >= count:
            break
        key = deep_key(prefix, writer, number)
        storage.write(key, deep_data(key))
        if number == 0:
            print("WRITING", flush=True)
        if number % 2:
            storage.delete(key)  # prunes the folders it empties
        else:
            print(f"KEPT {key}", flush=True)
    print("DONE", flush=True)


Job = Callable[[Storage, str, int, list[str]], None]


def in_threads(stores: list[Storage], job: Job, key: str, count: int) -> None:
    """Run ``job`` once per store, each in a thread, once a line arrives on stdin; print what they report."""
    print("READY", flush=True)
    sys.stdin.readline()
    reports: list[list[str]] = [[] for _ in stores]
    failures: list[BaseException] = []

    def run(store: Storage, report: list[str]) -> None:
        try:
            job(store, key, count, report)
        except BaseException as exc:
            failures.append(exc)
            raise

    threads = [threading.Thread(target=run, args=pair) for pair in zip(stores, reports, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    for line in itertools.chain.from_iterable(reports):
        print(line)
    print("DONE", flush=True)


def race_creates(
    storage: Storage,
    prefix: str,
    count: int,
    report: list[str],
    *,
    start: threading.Barrier,
    tag: str | None = None,
) -> None:
    """Try to create ``prefix/0`` ... ``prefix/<count-1>`` holding ``tag`` (by default, this
    process and thread), each key once all racers (``start``) are ready for it; report
    ``WON <key> <tag>`` for each created."""
    tag = tag or f"{os.getpid()}-{threading.get_ident()}"
    for number in range(count):
        start.wait(10)
        key = f"{prefix}/{number}"
        try:
            storage.write(key, tag.encode(), if_none_match=True)
        except AlreadyExistsError:
            continue
        report.append(f"WON {key} {tag}")


def count_up(storage: Storage, key: str, count: int, report: list[str]) -> None:
    """Add ``count`` to the counter ``key`` by compare-and-swap; report ``COUNTED <count> <conflicts>``."""
    done = conflicts = 0
    while done < count:
        try:
            etag = storage.stat(key).etag
            value = int(storage.read_bytes(key))
            storage.write(key, str(value + 1).encode(), if_match=etag)
        except (NotExistError, PreconditionFailedError):
            conflicts += 1
            continue
        done += 1
    report.append(f"COUNTED {done} {conflicts}")


def announced(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks, printing ``WRITING`` once the first one is handed over."""
    for index, chunk in enumerate(chunks):
        yield chunk
        if index == 0:
            print("WRITING", flush=True)
            time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
