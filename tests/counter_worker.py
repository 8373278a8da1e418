"""A process that increments a shared counter with compare-and-swap, for the fault tests.

``python -m tests.counter_worker SPEC KEY WRITER INCREMENTS MODE`` (SPEC as in
:mod:`tests.storage_worker`) prints one JSON line of what its writes reported.

- ``plain``: the counter is an integer. A write whose outcome is unknown is not tried
  again, so the counter ends between the successes and the successes plus the unknowns.
- ``exact``: the counter also records each writer's last increment, so a writer whose
  write had an unknown outcome reads whether it was applied: every increment is
  reported exactly once, and the counter ends at their number.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from objstore import (
    NotExistError,
    ObjstoreError,
    OutcomeUnknownError,
    PreconditionFailedError,
    Storage,
)
from tests.storage_worker import open_storage

ATTEMPTS = 500
SECONDS = 120.0


def swap(storage: Storage, key: str, change: Callable[[bytes], bytes | None], tally: dict[str, int]) -> str:
    """One compare-and-swap try of ``change`` on the counter: "written", "unchanged" (change
    gave None), "unknown" (the outcome was lost), or "again" (refused or failed)."""
    try:
        etag = storage.stat(key).etag
        new = change(storage.read_bytes(key))
        if new is None:
            return "unchanged"
        storage.write(key, new, if_match=etag)
    except OutcomeUnknownError:
        tally["unknown"] += 1
        return "unknown"
    except (PreconditionFailedError, NotExistError):
        tally["conflicts"] += 1
        return "again"
    except ObjstoreError:
        tally["errors"] += 1
        return "again"
    return "written"


def increment_plain(storage: Storage, key: str, tally: dict[str, int]) -> None:
    """One increment of an integer counter; ends on a success or an unknown outcome."""
    for _ in range(ATTEMPTS):
        outcome = swap(storage, key, lambda raw: str(int(raw) + 1).encode(), tally)
        if outcome == "written":
            tally["successes"] += 1
        if outcome in ("written", "unknown"):
            return
    raise RuntimeError("no increment after every attempt")


def increment_exact(storage: Storage, key: str, writer: str, number: int, tally: dict[str, int]) -> None:
    """Increment ``number`` of ``writer``: done once its number is recorded in the counter."""

    def change(raw: bytes) -> bytes | None:
        counter = json.loads(raw)
        if counter["last"].get(writer, 0) >= number:
            return None  # an unknown outcome that was applied after all
        counter["count"] += 1
        counter["last"][writer] = number
        return json.dumps(counter).encode()

    for _ in range(ATTEMPTS):
        outcome = swap(storage, key, change, tally)
        if outcome in ("written", "unchanged"):
            tally["successes" if outcome == "written" else "resolved"] += 1
            return
    raise RuntimeError("no increment after every attempt")


def main(spec: str, key: str, writer: str, increments: int, mode: str) -> None:
    storage = open_storage(spec)
    tally = dict.fromkeys(("successes", "unknown", "resolved", "conflicts", "errors"), 0)
    end = time.monotonic() + SECONDS
    for number in range(1, increments + 1):
        if time.monotonic() > end:
            raise RuntimeError(f"only {number - 1} increments in {SECONDS} s")
        if mode == "plain":
            increment_plain(storage, key, tally)
        else:
            increment_exact(storage, key, writer, number, tally)
    print(json.dumps(tally), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
