"""Conditional writes make a lost-update-free counter: N threads x M increments end at N x M."""

from __future__ import annotations

import threading

from objstore import NotExistError, PreconditionFailedError, Storage

THREADS = 4
INCREMENTS = 25


def increment(storage: Storage, conflicts: list[int]) -> None:
    done = 0
    while done < INCREMENTS:
        try:
            info = storage.stat("counter")
            value = int(storage.read_bytes("counter"))
        except NotExistError:
            continue
        try:
            storage.write("counter", str(value + 1).encode(), if_match=info.etag)
        except PreconditionFailedError:
            conflicts.append(1)
            continue
        done += 1


def test_counter(storage: Storage) -> None:
    storage.write("counter", b"0", if_none_match=True)
    conflicts: list[int] = []
    threads = [threading.Thread(target=increment, args=(storage, conflicts)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert int(storage.read_bytes("counter")) == THREADS * INCREMENTS
    print(f"{len(conflicts)} conflicting writes refused")
