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


def increment_plain(storage: Storage, key: str, tally: dict[str, int]) -> None:
    """One increment of an integer counter; ends on a success or an unknown outcome."""
    for _ in range(ATTEMPTS):
        try:
            etag = storage.stat(key).etag
            value = int(storage.read_bytes(key))
            storage.write(key, str(value + 1).encode(), if_match=etag)
        except OutcomeUnknownError:
            tally["unknown"] += 1
            return
        except (PreconditionFailedError, NotExistError):
            tally["conflicts"] += 1
            continue
        except ObjstoreError:
            tally["errors"] += 1
            continue
        tally["successes"] += 1
        return
    raise RuntimeError("no increment after every attempt")


def increment_exact(storage: Storage, key: str, writer: str, number: int, tally: dict[str, int]) -> None:
    """Increment ``number`` of ``writer``: done once its number is recorded in the counter."""
    for _ in range(ATTEMPTS):
        try:
            etag = storage.stat(key).etag
            counter = json.loads(storage.read_bytes(key))
            if counter["last"].get(writer, 0) >= number:
                tally["resolved"] += 1  # an unknown outcome that was applied after all
                return
            counter["count"] += 1
            counter["last"][writer] = number
            storage.write(key, json.dumps(counter).encode(), if_match=etag)
        except OutcomeUnknownError:
            tally["unknown"] += 1
            continue  # read again: the counter says whether it was applied
        except (PreconditionFailedError, NotExistError):
            tally["conflicts"] += 1
            continue
        except ObjstoreError:
            tally["errors"] += 1
            continue
        tally["successes"] += 1
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
