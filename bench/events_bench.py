"""Benchmark the run service end to end, with real processes: what it costs in S3 requests
when idle and per task, how long a dependency hop takes, and how many tasks a second it runs.

Run from the repository root, as root (so that an executor runs 8 tasks at once, each as a
uid of its own; not root, the executors are given ``--shared-user``)::

    python bench/events_bench.py           # 2 to 5 minutes (the slower the run service, the longer)
    python bench/events_bench.py --quick   # the smoke test: about a minute, the same table

Everything runs on 127.0.0.1, through the command line (``python -m runstore runservice``
and ``python -m runstore executor``, ``--no-tokens``) and the public client
(``RunServiceClient``); each process is stopped at the end, on failure too. The S3 store is
moto's server (``tests/s3server.py``) behind ``bench/counting_proxy.py``, which adds 20 ms to
every request, as a far endpoint does, and counts the requests by kind (GET, HEAD, PUT,
DELETE, POST, and LIST: a GET of the bucket that lists). The figures:

1. **idle, 0 executors**: S3 requests a second of a runservice nobody talks to, over a
   window (20 s; quick 3 s) after it settled; target at most 0.5/s and no LIST.
2. **idle, N executor-like clients**: threads that behave as idle executors do (register
   with ``put_executor``, then long-poll ``executor_tasks(id, after=version, wait=25)`` in a
   loop, registering again on a 404; against a runservice that answers at once, without a
   version, they poll as the executor then did: ``put_executor`` and ``executor_tasks`` every
   0.5 s); the requests a second beyond (1), at 10 and at 50 clients (quick: 2 and 5);
   target at most 0.5/s, no LIST, and at the larger count no more than at the smaller one
   plus 0.1/s (it does not grow with the executors). Each row shows the requests by kind:
   a window may hold a pass the runservice makes now and then over the store (a periodic
   sweep, the lease's renewals), which the kinds make plain.
3. **dependency hop**: a run of a chain of 10 one-step ``true`` tasks (each depends on the
   one before; quick: 3), one executor process; the median gap between one task's start and
   the next's (the tasks' start times in the run document), beside it the median gap from a
   task's end to the next one's start (the run service's share) and the run's duration
   divided by the tasks. On a posix store (target 0.2 s at most) and on S3 through the 20 ms
   proxy (target 0.6 s at most).
4. **one task's life on S3**: the S3 requests from creating a one-task run to seeing it
   finished (its task run, its logs fetched), 2 s after included, less the idle rate of the
   same runservice and executor measured just before and less the requests of the
   ``get_run`` polls that watched it (their cost measured apart); target at most 20.
5. **throughput**: 200 independent one-step ``true`` tasks (20 runs of 10; quick: 2 runs),
   4 executor processes with ``--limit 8``, posix store: tasks a second from the first
   create to the last run's end time; target 15/s at least.

A missed target is reported, not an error: the exit code is 0 unless something fails (a
process that does not start, a run that does not finish in time). The last line is
``RESULT <json>`` of the figures. ``--keep DIR`` keeps the processes' logs there.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from counting_proxy import CountingProxy  # noqa: E402
from objstore_bench import Row, print_columns  # noqa: E402

from runstore.contract.clients import RunServiceClient  # noqa: E402
from runstore.contract.errors import ErrorKind, RemoteServiceError, ServiceError  # noqa: E402
from runstore.contract.model import (  # noqa: E402
    ExecutorStatus,
    Run,
    RunConfig,
    RunPhase,
    Step,
    StepKind,
    TaskConfig,
)

DELAY = 0.02
STEP = Step(StepKind.RUN, command="true")
GROUP = "/project/bench/branch/main"
POLL_WAIT = 25.0  # a long poll's wait, as the executor asks
LEGACY_INTERVAL = 0.5  # the executor's loop interval, against a runservice without long polls
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Plan:
    idle_window: float  # seconds of each idle window
    settle: float  # seconds after a change before a window starts
    clients: tuple[int, int]  # executor-like clients: the smaller count, the larger
    chain: int  # tasks in the dependency chain
    runs: int  # throughput: runs of TASKS_PER_RUN tasks
    run_timeout: float  # seconds a run (or the throughput batch) may take
    executors: int = 4
    limit: int = 8


TASKS_PER_RUN = 10
FULL = Plan(idle_window=20, settle=5, clients=(10, 50), chain=10, runs=20, run_timeout=150)
QUICK = Plan(idle_window=3, settle=1, clients=(2, 5), chain=3, runs=2, run_timeout=60)


# -- processes ------------------------------------------------------------------------


class Process:
    """A ``python -m runstore ...`` process that prints ``LISTENING <url>`` once it serves; its
    stdout after that line and its stderr go to ``log``."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self.stopped = False
        self._log_file: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runstore", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        timer = threading.Timer(START_TIMEOUT, self.process.kill)
        timer.start()
        try:
            line = self.process.stdout.readline()
        finally:
            timer.cancel()
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"{name} did not start ({line!r}): {self.tail()}")
        self.url = line.split()[1]
        # nothing else is printed there, but never let a full pipe block the process
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """RuntimeError, with the end of its log, if the process exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}: {self.tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, SIGKILL after ``timeout`` seconds; the exit code."""
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ({self.name} did not stop within {timeout:g} s: killed)", flush=True)
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Bench:
    """The processes and servers of one benchmark, stopped by :meth:`close` in reverse order."""

    def __init__(self, plan: Plan, base: Path) -> None:
        self.plan = plan
        self.base = base
        self.logs = base / "logs"
        self.logs.mkdir()
        self._stops: list[Callable[[], object]] = []
        self.processes: list[Process] = []
        self.is_root = os.geteuid() == 0
        self._s3: Any = None
        self.proxy: CountingProxy | None = None
        self.home = base / "home"
        self.home.mkdir()

    def close(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()

    def check(self) -> None:
        """RuntimeError if a process exited before it was stopped."""
        for process in self.processes:
            if not process.stopped:
                process.check()

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, args, self.logs / f"{name}.log", env)
        self.processes.append(process)
        self._stops.append(process.stop)
        return process

    # -- S3 -------------------------------------------------------------------------

    def s3_proxy(self) -> CountingProxy:
        """The counting proxy before moto's server, both started on first use."""
        if self.proxy is None:
            from tests import s3server

            self._s3 = s3server.start()
            self._stops.append(self._s3.stop)
            proxy = CountingProxy(self._s3.endpoint, delay=DELAY)
            proxy.__enter__()
            self._stops.append(lambda: proxy.__exit__(None, None, None))
            self.proxy = proxy
        return self.proxy

    def s3_bucket(self, name: str) -> list[str]:
        """A new bucket of moto's server (made directly, not counted); the runservice's store
        arguments, through the proxy."""
        from minio import Minio

        from tests import s3server

        self.s3_proxy()
        Minio(
            self._s3.endpoint, access_key=s3server.ACCESS_KEY, secret_key=s3server.SECRET_KEY, secure=False
        ).make_bucket(name)
        return ["--store", f"s3://{name}/ci"]

    def s3_env(self) -> dict[str, str]:
        from tests import s3server

        proxy = self.s3_proxy()
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        env.update(
            HOME=str(self.home),
            AWS_ENDPOINT_URL=f"http://{proxy.endpoint}",
            AWS_ACCESS_KEY_ID=s3server.ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=s3server.SECRET_KEY,
            AWS_REGION="us-east-1",
        )
        return env

    # -- the run service ------------------------------------------------------------

    def runservice(self, name: str, store: list[str], env: dict[str, str] | None = None) -> Process:
        return self.start(name, ["runservice", *store, "--listen", "127.0.0.1:0", "--no-tokens"], env)

    def executor(self, name: str, runservice: Process, limit: int) -> Process:
        data = self.base / name
        args = [
            "executor",
            "--runservice",
            runservice.url,
            "--data",
            str(data),
            "--id",
            name,
            "--limit",
            str(limit),
            "--listen",
            "127.0.0.1:0",
            "--no-tokens",
        ]
        if not self.is_root:
            args.append("--shared-user")  # else one task at a time
        return self.start(name, args)

    def client(self, runservice: Process) -> RunServiceClient:
        client = RunServiceClient(runservice.url)
        self._stops.append(client.close)
        return client


# -- executor-like clients ------------------------------------------------------------


class FakeExecutors:
    """Threads that behave as idle executors: register, then long-poll their tasks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.registered: set[str] = set()
        self.counts: collections.Counter[str] = collections.Counter()  # polls, reregistered, legacy, errors
        self.last_error = ""

    def add(self, count: int) -> None:
        for _ in range(count):
            executor_id = f"fake-{len(self._threads) + 1}"
            thread = threading.Thread(target=self._run, args=(executor_id,), name=executor_id, daemon=True)
            self._threads.append(thread)
            thread.start()

    def __len__(self) -> int:
        return len(self._threads)

    def snapshot(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.counts)

    def _note(self, what: str, error: BaseException | None = None) -> None:
        with self._lock:
            self.counts[what] += 1
            if error is not None:
                self.last_error = f"{type(error).__name__}: {error}"

    def _run(self, executor_id: str) -> None:
        client = RunServiceClient(self.url)
        status = ExecutorStatus("http://127.0.0.1:9", 2)  # never fetched from: it has no task
        version = ""
        registered = legacy = False
        try:
            while not self.stopping.is_set():
                try:
                    if not registered or legacy:
                        client.put_executor(executor_id, status)
                        if registered and not legacy:
                            self._note("reregistered")
                        registered = True
                        with self._lock:
                            self.registered.add(executor_id)
                    answer = client.executor_tasks(executor_id, after=version, wait=POLL_WAIT)
                    self._note("polls")
                    if not answer.version:  # a runservice without long polls: poll as the executor did
                        if not legacy:
                            self._note("legacy")
                        legacy = True
                        self.stopping.wait(LEGACY_INTERVAL)
                    version = answer.version
                except RemoteServiceError as exc:
                    if exc.kind is ErrorKind.NOT_EXIST:
                        registered = False
                        self._note("not registered (404)")
                        continue
                    self._note("errors", exc)
                    self.stopping.wait(1.0)
                except ServiceError as exc:
                    if self.stopping.is_set():
                        return
                    self._note("errors", exc)
                    self.stopping.wait(1.0)
        finally:
            client.close()

    def stop(self) -> None:
        """Ask the threads to stop (those in a long poll end when it answers or the runservice stops)."""
        self.stopping.set()

    def join(self, timeout: float) -> int:
        """Wait for the threads; how many are still running."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(thread.is_alive() for thread in self._threads)


# -- measuring -------------------------------------------------------------------------


def window(proxy: CountingProxy, seconds: float) -> collections.Counter[str]:
    """The S3 requests relayed during the next ``seconds``, by kind."""
    before = proxy.kinds()
    time.sleep(seconds)
    return proxy.kinds() - before


def kinds_text(kinds: collections.Counter[str]) -> str:
    return " ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())) or "none"


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def wait_finished(
    client: RunServiceClient, run_id: str, timeout: float, every: float = 0.1
) -> tuple[Run, int]:
    """The run once finished, and how many times it was read."""
    deadline = time.monotonic() + timeout
    reads = 0
    while True:
        run = client.get_run(run_id)
        reads += 1
        if run.phase is RunPhase.FINISHED:
            return run, reads
        if time.monotonic() > deadline:
            done = sum(task.status.finished for task in run.tasks)
            raise TimeoutError(
                f"run {run_id} did not finish within {timeout:g} s"
                f" ({done} of {len(run.tasks)} tasks finished)"
            )
        time.sleep(every)


def chain_config(length: int) -> RunConfig:
    return RunConfig([TaskConfig(f"t{n}", [STEP], depends=[f"t{n - 1}"] if n else []) for n in range(length)])


def failures(run: Run) -> str:
    """'' if the run succeeded, else what failed."""
    if run.result.value == "success":
        return ""
    bad = [
        f"{task.name} {task.status.value} {task.error}".strip()
        for task in run.tasks
        if task.status.value != "success"
    ]
    return f"run {run.id} {run.result.value}: {'; '.join(bad[:3])}"


class Report:
    """The rows, the figures for the RESULT line, and what went wrong."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.figures: dict[str, Any] = {}
        self.problems: list[str] = []
        self.errors: list[str] = []

    def add(self, key: str, figure: float | None, row: Row) -> None:
        self.rows.append(row)
        self.figures[key] = figure
        target = f" [{row.target}: {row.status}]" if row.target else ""
        print(f"  {row.name}: {row.ours} ({row.baseline}){target}", flush=True)

    def problem(self, text: str) -> None:
        print(f"  problem: {text}", flush=True)
        self.problems.append(text)

    @contextlib.contextmanager
    def section(self, name: str, rows: list[tuple[str, str]]) -> Iterator[None]:
        """Run a part of the benchmark; if it fails, its missing rows say so (and the exit code)."""
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            for key, title in rows:
                if key not in self.figures:
                    self.add(
                        key, None, Row(title, "ERROR", f"{type(exc).__name__}: {exc}"[:120], None, "", False)
                    )
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)", flush=True)


def rate_row(title: str, kinds: collections.Counter[str], seconds: float, target: str, passed: bool) -> Row:
    total = sum(kinds.values())
    return Row(
        title, f"{total / seconds:.2f}/s", f"{kinds_text(kinds)} in {seconds:g} s", None, target, passed
    )


# -- the parts -----------------------------------------------------------------------


def idle_parts(bench: Bench, report: Report) -> None:
    """(1) and (2): an idle runservice on S3, then with executor-like clients."""
    plan = bench.plan
    small, large = plan.clients
    idle_title = "S3 requests/s, idle runservice, 0 executors"
    client_titles = {n: f"S3 requests/s beyond idle, {n} executor-like clients" for n in plan.clients}
    rows = [("idle_rate", idle_title)] + [(f"clients_{n}_rate", t) for n, t in client_titles.items()]
    with report.section("idle runservice on S3", rows):
        proxy = bench.s3_proxy()
        runservice = bench.runservice("runservice-idle", bench.s3_bucket("events-idle"), bench.s3_env())
        time.sleep(plan.settle)
        idle = window(proxy, plan.idle_window)
        idle_rate = sum(idle.values()) / plan.idle_window
        bench.check()  # every process still runs
        report.add(
            "idle_rate",
            idle_rate,
            rate_row(
                idle_title, idle, plan.idle_window, "<= 0.5/s, no LIST", idle_rate <= 0.5 and not idle["LIST"]
            ),
        )
        fakes = FakeExecutors(runservice.url)
        try:
            beyond: dict[int, float] = {}
            for count in plan.clients:
                fakes.add(count - len(fakes))
                wait_for(f"{count} clients registered", lambda c=count: len(fakes.registered) >= c, 60)  # type: ignore[misc]
                time.sleep(plan.settle)
                before = fakes.snapshot()
                kinds = window(proxy, plan.idle_window)
                seen = fakes.snapshot() - before
                rate = sum(kinds.values()) / plan.idle_window
                beyond[count] = rate - idle_rate
                passed = beyond[count] <= 0.5 and not kinds["LIST"]
                target = "<= 0.5/s, no LIST"
                if count == large:
                    target += f", <= {small}'s + 0.1/s"
                    passed = passed and beyond[count] <= beyond[small] + 0.1
                polls = seen["polls"]
                detail = (
                    f"{kinds_text(kinds)} in {plan.idle_window:g} s; {rate:.2f}/s in all;"
                    f" {polls} poll answers ({polls / plan.idle_window / count:.2f}/s a client)"
                )
                for what in ("reregistered", "not registered (404)", "errors"):
                    if seen[what]:
                        detail += f", {seen[what]} {what}"
                if fakes.counts["legacy"]:
                    detail += ", answered without a version: polled every 0.5 s"
                bench.check()  # every process still runs
                report.add(
                    f"clients_{count}_rate",
                    beyond[count],
                    Row(client_titles[count], f"{beyond[count]:.2f}/s", detail, None, target, passed),
                )
                if seen["errors"]:
                    report.problem(
                        f"{count} executor-like clients: {seen['errors']} errors, last {fakes.last_error}"
                    )
        finally:
            fakes.stop()
            code = runservice.stop()
            left = fakes.join(10)
            if code != 0:
                report.problem(f"runservice-idle exited with code {code}")
            if left:
                report.problem(
                    f"{left} executor-like clients still in a request after the runservice stopped"
                )


def chain_hop(client: RunServiceClient, length: int, timeout: float) -> tuple[float, float, float, Run]:
    """Run a chain of ``length`` tasks: the median start-to-start gap, the median gap from a
    task's end to the next one's start, the duration / length."""
    run = client.create_run(chain_config(length), GROUP)
    run, _ = wait_finished(client, run.id, timeout, every=0.05)
    starts = [task.start_time or task.end_time for task in run.tasks]
    assert all(start is not None for start in starts), run
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]  # type: ignore[operator]
    ends = [task.end_time or task.start_time for task in run.tasks]
    waits = [(b - a).total_seconds() for a, b in zip(ends, starts[1:], strict=False)]  # type: ignore[operator]
    assert run.creation_time is not None and run.end_time is not None
    duration = (run.end_time - run.creation_time).total_seconds()
    median = statistics.median(gaps) if gaps else duration
    return median, statistics.median(waits) if waits else 0.0, duration / length, run


def hop_row(
    report: Report, key: str, title: str, limit: float, client: RunServiceClient, length: int, timeout: float
) -> None:
    median, waiting, per_task, run = chain_hop(client, length, timeout)
    if problem := failures(run):
        report.problem(problem)
    report.add(
        key,
        median,
        Row(
            title,
            f"{median:.3f} s",
            f"median start-to-start of {length - 1} gaps (end to next start {waiting:.3f} s);"
            f" run duration / {length}: {per_task:.3f} s",
            None,
            f"<= {limit:g} s",
            median <= limit and not problem,
        ),
    )


def s3_task_parts(bench: Bench, report: Report) -> None:
    """(4) and (3) on S3: one task's requests, then the chain, one executor."""
    plan = bench.plan
    life_title = "S3 requests of a one-task run's life, beyond idle"
    hop_title = f"dependency hop, chain of {plan.chain}, S3 at 20 ms a request"
    with report.section("one executor on S3", [("task_requests", life_title), ("hop_s3", hop_title)]):
        proxy = bench.s3_proxy()
        runservice = bench.runservice("runservice-s3", bench.s3_bucket("events-tasks"), bench.s3_env())
        bench.executor("executor-s3", runservice, 2)
        client = bench.client(runservice)
        time.sleep(plan.settle)
        idle = window(proxy, plan.idle_window)
        idle_rate = sum(idle.values()) / plan.idle_window

        before = proxy.kinds()
        started = time.monotonic()
        run = client.create_run(RunConfig([TaskConfig("one", [STEP])]), GROUP)
        run, reads = wait_finished(client, run.id, plan.run_timeout, every=0.1)
        took = time.monotonic() - started
        time.sleep(2.0)  # what follows the end (the active entry's delete, say)
        elapsed = time.monotonic() - started
        life = proxy.kinds() - before
        if problem := failures(run):
            report.problem(problem)

        # what a get_run costs, to take the polls out
        before = proxy.kinds()
        polled = time.monotonic()
        for _ in range(10):
            client.get_run(run.id)
        per_read = max(
            0.0, (sum((proxy.kinds() - before).values()) - idle_rate * (time.monotonic() - polled)) / 10
        )

        net = sum(life.values()) - idle_rate * elapsed - reads * per_read
        detail = (
            f"{sum(life.values())} in {elapsed:.1f} s ({kinds_text(life)}) less idle {idle_rate:.2f}/s"
            f" ({kinds_text(idle)} in {plan.idle_window:g} s) and {reads} get_run x {per_read:.1f};"
            f" finished after {took:.2f} s"
        )
        bench.check()  # every process still runs
        report.add(
            "task_requests",
            net,
            Row(life_title, f"{net:.0f} requests", detail, None, "<= 20", net <= 20 and not problem),
        )
        hop_row(report, "hop_s3", hop_title, 0.6, client, plan.chain, plan.run_timeout)


def posix_parts(bench: Bench, report: Report) -> None:
    """(3) on posix with one executor, then (5) with all of them."""
    plan = bench.plan
    total = plan.runs * TASKS_PER_RUN
    hop_title = f"dependency hop, chain of {plan.chain}, posix store"
    rate_title = f"throughput, {total} one-step tasks, {plan.executors} executors --limit {plan.limit}, posix"
    with report.section(
        "executors on a posix store", [("hop_posix", hop_title), ("tasks_per_second", rate_title)]
    ):
        runservice = bench.runservice("runservice-posix", ["--store", str(bench.base / "store")])
        client = bench.client(runservice)
        bench.executor("executor-1", runservice, plan.limit)
        time.sleep(1.0)
        hop_row(report, "hop_posix", hop_title, 0.2, client, plan.chain, plan.run_timeout)

        for number in range(2, plan.executors + 1):
            bench.executor(f"executor-{number}", runservice, plan.limit)
        time.sleep(plan.settle)
        config = RunConfig([TaskConfig(f"t{n}", [STEP]) for n in range(TASKS_PER_RUN)])
        started = datetime.now(UTC)
        run_ids = [client.create_run(config, GROUP).id for _ in range(plan.runs)]
        created = (datetime.now(UTC) - started).total_seconds()
        finished: dict[str, Run] = {}
        deadline = time.monotonic() + plan.run_timeout
        while len(finished) < len(run_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
            for run_id in run_ids:
                if run_id not in finished:
                    run = client.get_run(run_id)
                    if run.phase is RunPhase.FINISHED:
                        finished[run_id] = run
        if len(finished) < len(run_ids):
            runs = [finished.get(run_id) or client.get_run(run_id) for run_id in run_ids]
            done = sum(task.status.finished for run in runs for task in run.tasks)
            raise TimeoutError(f"{done} of {total} tasks finished in {plan.run_timeout:g} s")
        end = max(run.end_time for run in finished.values() if run.end_time is not None)
        seconds = (end - started).total_seconds()
        rate = total / seconds
        bad = [problem for run in finished.values() if (problem := failures(run))]
        for problem in bad[:3]:
            report.problem(problem)
        bench.check()  # every process still runs
        report.add(
            "tasks_per_second",
            rate,
            Row(
                rate_title,
                f"{rate:.1f} tasks/s",
                f"{total} tasks in {seconds:.1f} s ({plan.runs} runs of {TASKS_PER_RUN},"
                f" created in {created:.1f} s)" + (f"; {len(bad)} runs failed" if bad else ""),
                None,
                ">= 15/s",
                rate >= 15 and not bad,
            ),
        )


# -- output --------------------------------------------------------------------------

#: The runservice logs without levels: what reads as trouble.
_TROUBLE = re.compile(
    r"WARNING|ERROR|CRITICAL|Traceback|[Ee]rror|[Ff]ail|[Ll]ost|unavailable|retry|retrying|cannot|did not"
)
_BENIGN = re.compile(
    r"takes no tokens|accepts every request|not isolated|shared user|other users may not search"
)


def log_findings(bench: Bench) -> list[str]:
    """The warnings and errors the processes logged (distinct, the benign ones left out)."""
    found: list[str] = []
    for process in bench.processes:
        if not process.log.exists():
            continue
        seen: collections.Counter[str] = collections.Counter()
        first: dict[str, str] = {}
        for line in process.log.read_text(errors="replace").splitlines():
            if not _TROUBLE.search(line) or _BENIGN.search(line):
                continue
            key = re.sub(r"^\S+ \S+ ", "", line)  # the time stamp
            key = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", key)[:160]
            seen[key] += 1
            first.setdefault(key, line[:300])
        for key, count in seen.most_common(8):
            found.append(f"{process.name}: {count} x {first[key]}")
    return found


def print_rows(rows: list[Row]) -> None:
    header = ("measurement", "figure", "detail", "target", "result")
    print_columns(header, [(r.name, r.ours, r.baseline, r.target or "-", r.status) for r in rows], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short windows, fewer clients and tasks (about a minute)"
    )
    parser.add_argument("--keep", metavar="DIR", help="keep the processes' logs (and the stores) in DIR")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    print(
        f"run service events benchmark ({'quick' if args.quick else 'full'}):"
        f" Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs, {'root' if os.geteuid() == 0 else 'not root: --shared-user'};"
        f" {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    if args.keep:
        base = Path(args.keep).resolve()
        base.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="events-bench-", dir=base))
    else:
        base = Path(tempfile.mkdtemp(prefix="events-bench-"))
    base.chmod(0o711)  # task users reach their workspaces by path
    report = Report()
    bench = Bench(plan, base)
    try:
        idle_parts(bench, report)
        s3_task_parts(bench, report)
        posix_parts(bench, report)
    finally:
        bench.close()
        findings = log_findings(bench)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print_rows(report.rows)
    if report.problems:
        print("problems seen:")
        for text in report.problems:
            print(f"  {text}")
    if findings:
        print("warnings and errors the processes logged (distinct; count x first):")
        for text in findings:
            print(f"  {text}")
    if args.keep:
        print(f"logs and stores kept in {base}")
    print(
        f"total time {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f}"
        f" (1 min), {os.getloadavg()[1]:.2f} (5 min): other work on the machine slows the timings"
    )
    print("RESULT " + json.dumps({"figures": report.figures, "errors": report.errors}))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
