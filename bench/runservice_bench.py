"""Benchmark the run service at scale: what a scheduler tick, a page of runs and a delete cost.

Run from the repository root::

    python bench/runservice_bench.py           # 10,000 finished runs, a 100-task delete
    python bench/runservice_bench.py --quick   # 1,000 runs, a 10-task delete (the smoke test)

Requests are counted by ``objstore.testing.CountingStorage`` around a ``MemoryStorage``
(a listing counts one request per 1,000 keys, as S3 pages it), so these figures do not
depend on the machine:

* the idle tick: one pass of every loop (``RunService.run_once``) over 5 unfinished runs
  and an executor, with N finished runs in the store, against the same tick with none
  (target: at most 1.1x; a pass works from memory, so both are 0 now); the scan of every
  run document, which the loops made before the index of unfinished runs, is shown for
  comparison;
* the sweep (``RunService.sweep``), which reads the store again now and then: with N
  finished runs against none (target: at most 1.1x);
* a page of 50 runs out of N, newest first, and one filtered by group (target: under 60
  requests).

Time is measured against a local moto server (``tests/s3server.py --concurrent``) behind
``bench/latency_proxy.py``, which adds 20 ms to every request, as a far endpoint does:

* deleting a finished run whose tasks no other run shares: ``RunStore.delete_run`` with
  its default pool against the same requests one task at a time (``workers=1``), measured
  in the same run (target: 5x faster or more).

A missed target is reported, not an error: the exit code is 0 unless something fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import attrs  # noqa: E402
from objstore_bench import Row, format_time, print_table, report  # noqa: E402

from objstore import MemoryStorage, Storage  # noqa: E402
from objstore.testing import CountingStorage  # noqa: E402
from runstore.contract.model import (  # noqa: E402
    ExecutorStatus,
    FetchPhase,
    RunConfig,
    RunPhase,
    RunResult,
    Step,
    StepKind,
    TaskConfig,
    TaskStatus,
)
from runstore.runservice.runs import Runs  # noqa: E402
from runstore.runservice.service import RunService  # noqa: E402
from runstore.runservice.state import State  # noqa: E402

BUCKET = "runservice-bench"
DELAY = 0.02
ACTIVE_RUNS = 5
STEP = Step(StepKind.RUN, command="true")


@dataclass(frozen=True)
class Plan:
    finished_runs: int
    delete_tasks: int


FULL = Plan(finished_runs=10_000, delete_tasks=100)
QUICK = Plan(finished_runs=1_000, delete_tasks=10)


def finished_runs(state: State, count: int) -> None:
    """``count`` finished one-task runs in ten groups, their documents as the runservice leaves them."""
    runs = Runs(state)
    config = RunConfig([TaskConfig("build", [STEP])])
    for number in range(count):
        run = runs.create(config, f"/project/p{number % 10}/branch/main")
        task = attrs.evolve(
            run.tasks[0],
            status=TaskStatus.SUCCESS,
            setup_log_fetch=FetchPhase.FINISHED,
            step_log_fetch=[FetchPhase.FINISHED],
        )
        state.runs.put(
            run.id, attrs.evolve(run, tasks=[task], phase=RunPhase.FINISHED, result=RunResult.SUCCESS)
        )
        state.index.finished(run.id)


def service_over(storage: Storage, finished: int) -> tuple[RunService, CountingStorage]:
    """A runservice whose store holds ``finished`` finished runs and ACTIVE_RUNS unfinished ones
    (some assigned to its one executor), the requests of its store counted."""
    counting = CountingStorage(storage)
    setup = State(storage)
    finished_runs(setup, finished)
    service = RunService(counting, lease_ttl=timedelta(hours=1)).start(loops=False)
    for number in range(ACTIVE_RUNS):
        service.runs.create(RunConfig([TaskConfig(f"t{number}", [STEP])]), "/project/active/branch/main")
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 2))
    service.run_once()  # assigns what fits
    return service, counting


def tick_requests(service: RunService, counting: CountingStorage) -> int:
    counting.reset()
    service.run_once()
    service.fetcher.fetch_once(wait=True)
    return counting.total


def sweep_requests(service: RunService, counting: CountingStorage) -> int:
    counting.reset()
    service.sweep()
    return counting.total


def ratio(ours: int, baseline: int) -> float | None:
    return ours / baseline if baseline else None


def count_rows(plan: Plan) -> list[Row]:
    empty, empty_counts = service_over(MemoryStorage(), 0)
    full, full_counts = service_over(MemoryStorage(), plan.finished_runs)
    try:
        idle = tick_requests(empty, empty_counts)
        busy = tick_requests(full, full_counts)
        swept_empty = sweep_requests(empty, empty_counts)
        swept_full = sweep_requests(full, full_counts)
        full_counts.reset()
        scanned = len([full.state.runs.get(run_id) for run_id in full.state.runs.ids()])
        scan = full_counts.total
        rows = [
            report(
                Row(
                    f"idle tick, {plan.finished_runs:,} finished runs (vs none)",
                    f"{busy} requests",
                    f"{idle} requests",
                    ratio(busy, idle),
                    "<= 1.1x",
                    busy <= 1.1 * idle,
                )
            ),
            report(
                Row(
                    f"sweep, {plan.finished_runs:,} finished runs (vs none)",
                    f"{swept_full} requests",
                    f"{swept_empty} requests",
                    ratio(swept_full, swept_empty),
                    "<= 1.1x",
                    swept_full <= 1.1 * swept_empty,
                )
            ),
            report(
                Row(
                    f"scan of every run, as before the index ({scanned:,} documents)",
                    f"{scan} requests",
                    f"{idle} requests",
                    ratio(scan, idle),
                )
            ),
        ]
        for name, filters in (("", {}), (", group /project/p3/", {"group_prefix": "/project/p3/"})):
            full_counts.reset()
            page = full.runs.list(limit=50, **filters)  # type: ignore[arg-type]
            assert len(page.runs) == 50 and page.next
            spent = full_counts.total
            rows.append(
                report(
                    Row(
                        f"a page of 50 runs of {plan.finished_runs + ACTIVE_RUNS:,}{name}",
                        f"{spent} requests",
                        "-",
                        None,
                        "< 60",
                        spent < 60,
                    )
                )
            )
        return rows
    finally:
        empty.stop()
        full.stop()


def delete_rows(plan: Plan) -> list[Row]:
    from latency_proxy import LatencyProxy
    from minio import Minio

    from objstore.s3 import S3Storage
    from runstore.store import RunStore
    from tests import s3server

    server = s3server.start(serialized=False)
    try:
        Minio(
            server.endpoint, access_key=s3server.ACCESS_KEY, secret_key=s3server.SECRET_KEY, secure=False
        ).make_bucket(BUCKET)

        def store(endpoint: str) -> S3Storage:
            return S3Storage(
                endpoint,
                BUCKET,
                access_key=s3server.ACCESS_KEY,
                secret_key=s3server.SECRET_KEY,
                secure=False,
                region="us-east-1",
            )

        direct = RunStore(store(server.endpoint))

        def prepared(run_id: str) -> list[str]:
            tasks = [f"{run_id}-task-{number}" for number in range(plan.delete_tasks)]
            for task_id in tasks:
                direct.create_task(run_id, task_id)
                direct.write_log(task_id, 0, b"a log line\n")
                direct.finish_task(task_id)
            return tasks

        with LatencyProxy(server.endpoint, delay=DELAY) as proxy:
            far = RunStore(store(proxy.endpoint))
            far.storage.exists("warm-up")  # the first connection is not counted
            times: dict[int, float] = {}
            for workers in (1, 16):
                run_id = f"run-{workers}"
                tasks = prepared(run_id)
                started = time.perf_counter()
                far.delete_run(run_id, tasks, workers=workers)
                times[workers] = time.perf_counter() - started
                assert not list(direct.storage.list_keys(f"logs/{run_id}-task-")), "data left behind"
            relayed = proxy.counts()[0]
    finally:
        server.stop()
    ratio = times[1] / times[16]
    row = Row(
        f"delete a {plan.delete_tasks}-task run, 20 ms a request ({relayed} requests relayed)",
        format_time(times[16]),
        format_time(times[1]),
        ratio,
        ">= 5x",
        ratio >= 5,
    )
    return [report(row)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 runs and a 20-task delete")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    print(
        f"runservice benchmark ({'quick' if args.quick else 'full'}): Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs; {plan.finished_runs:,} finished runs, a {plan.delete_tasks}-task delete",
        flush=True,
    )
    started = time.perf_counter()
    rows = count_rows(plan) + delete_rows(plan)
    print_table(rows, "ratio = ours / baseline for requests (lower is better); baseline / ours for time.")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
