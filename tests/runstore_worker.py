"""A run store client in its own process, for stress and crash tests.

``python -m tests.runstore_worker SPEC stress WORKER SECONDS SEED`` creates, restarts
(``add_run``) and deletes runs that share tasks with the other workers for SECONDS, and
checks every task a run of its references before deleting the run and at the end; it
prints a JSON summary with the live references it leaves.

``python -m tests.runstore_worker SPEC steps OPERATION RUN TASK STOP`` runs one
operation (``add`` or ``remove``) of the protocol for STOP steps, prints ``PAUSED`` and
waits to be killed.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import TypeVar

from objstore import CommonPrefix, NotExistError
from runstore import RunStore
from runstore.sharing import Steps
from tests.storage_worker import open_storage

T = TypeVar("T")
HOT_TASKS = 4  # few tasks at a time, so that the workers race on the same ones
LIVE_RUNS = 2  # runs a worker keeps: tasks lose their last reference often


def task_data(task_id: str) -> dict[str, bytes]:
    """What a task's logs and archive hold: derived from its id, so any reader can check it."""
    return {"setup": f"{task_id} setup\n".encode(), "0": f"{task_id} step 0\n".encode() * 50}


def make_task(store: RunStore, run_id: str, task_id: str) -> None:
    store.create_task(run_id, task_id)
    data = task_data(task_id)
    store.write_log(task_id, "setup", data["setup"])
    store.write_log(task_id, 0, data["0"])
    store.write_archive(task_id, 0, data["0"][::-1])
    store.finish_task(task_id)


def damage(store: RunStore, task_id: str) -> str | None:
    """What is wrong with a referenced task's data, or None if it is whole."""
    data = task_data(task_id)
    try:
        with store.open_log(task_id, "setup") as stream:
            setup = stream.read()
        with store.open_log(task_id, 0) as stream:
            step = stream.read()
        with store.open_archive(task_id, 0) as stream:
            archive = stream.read()
    except NotExistError as error:
        return f"{task_id}: {error}"
    if (setup, step, archive) != (data["setup"], data["0"], data["0"][::-1]):
        return f"{task_id}: changed"
    return None


def jittered(steps: Steps[T], chooser: random.Random) -> T:
    """Run an operation, pausing up to 3 ms between its steps to widen the races."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if chooser.random() < 0.5:
            time.sleep(chooser.random() * 0.003)


def stress(store: RunStore, worker: int, seconds: float, seed: int) -> None:
    chooser = random.Random(seed)
    live: dict[str, list[str]] = {}
    counts = {"create": 0, "add": 0, "add_refused": 0, "delete": 0, "remove": 0, "checks": 0}
    losses: list[str] = []
    serial = 0
    deadline = time.monotonic() + seconds

    def check(run_id: str) -> None:
        for task_id in live[run_id]:
            counts["checks"] += 1
            problem = damage(store, task_id)
            if problem:
                losses.append(f"{run_id} -> {problem}")

    while time.monotonic() < deadline:
        serial += 1
        known = [
            entry.key.split("/")[1]
            for entry in store.storage.list("logs/", recursive=False)
            if isinstance(entry, CommonPrefix)
        ]
        action = "delete" if len(live) >= LIVE_RUNS or (live and chooser.random() < 0.3) else "restart"
        if len(known) < HOT_TASKS:
            run_id, task_id = f"w{worker}-r{serial}", f"w{worker}-t{serial}"
            make_task(store, run_id, task_id)
            live[run_id] = [task_id]
            counts["create"] += 1
        elif action == "restart":
            run_id = f"w{worker}-r{serial}"
            shared = []
            for task_id in chooser.sample(known, 2):
                counts["add"] += 1
                if jittered(store.add_run_steps(run_id, task_id), chooser):
                    shared.append(task_id)
                else:
                    counts["add_refused"] += 1
            live[run_id] = shared
            check(run_id)
        else:
            run_id = chooser.choice(sorted(live))
            check(run_id)
            for task_id in live.pop(run_id):
                jittered(store.remove_run_steps(run_id, task_id), chooser)
            counts["delete"] += 1
            counts["remove"] += 1
    for run_id in live:
        check(run_id)
    print(json.dumps({"counts": counts, "losses": losses, "live": live}), flush=True)


def steps(store: RunStore, operation: str, run_id: str, task_id: str, stop: int) -> None:
    if operation == "add":
        running = store.add_run_steps(run_id, task_id)
    else:
        running = store.remove_run_steps(run_id, task_id)
    for done, _ in enumerate(running, start=1):
        if done == stop:
            print("PAUSED", flush=True)
            time.sleep(120)
    print("FINISHED", flush=True)


def main(argv: list[str]) -> None:
    store = RunStore(open_storage(argv[0]))
    if argv[1] == "stress":
        stress(store, int(argv[2]), float(argv[3]), int(argv[4]))
    else:
        steps(store, argv[2], argv[3], argv[4], int(argv[5]))


if __name__ == "__main__":
    main(sys.argv[1:])
