"""A task's step processes end with it: when it is unassigned, ended by the runservice, or the executor stops.

Each step here starts background processes, one of them in a nested shell, writes their
pids to a file and waits. The tests look in /proc for what is left of the step's process
group, and kill it after each test whatever the outcome. The processes sleep for at most
``LIFETIME`` seconds, so nothing outlives a broken test for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from runstore.contract.http.server import Request, Response
from runstore.contract.model import ExecutorTaskPhase, ExecutorTaskStatus
from runstore.executor import steps as executor_steps
from runstore.executor.executor import Executor
from runstore.executor.steps import KILL_GRACE
from tests.executor_runservice import RunserviceStandIn
from tests.test_executor import (
    EXECUTOR_ID,
    MakeExecutor,
    make_task,
    run,
    start_cli,
    step_phase,
    task_dir,
    wait_file,
    wait_until,
)

RUNNING = ExecutorTaskPhase.RUNNING
SUCCESS = ExecutorTaskPhase.SUCCESS
FAILED = ExecutorTaskPhase.FAILED
LIFETIME = 120  # seconds a step's processes sleep
PROCESSES = 4  # the step's shell, its background sleep, the nested shell and its sleep
GONE_WITHIN = KILL_GRACE + 5.0  # seconds for a step's processes to end once it is stopped


def proc_stat(pid: int) -> tuple[str, int] | None:
    """The state and process group of process ``pid`` from /proc, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold anything
    return fields[0], int(fields[2])


@attrs.define
class Family:
    """The processes of one step, which writes their pids to ``pids``, one a line (its shell's first)."""

    pids: Path

    def command(self, *, ignore_term: bool = False) -> str:
        """The step's command; with ``ignore_term`` all its processes ignore SIGTERM."""
        assert "'" not in str(self.pids)
        trap = "trap '' TERM; " if ignore_term else ""
        nested = f"sh -c 'sleep {LIFETIME} & echo $! >> {self.pids}; echo $$ >> {self.pids}; wait'"
        return f"{trap}echo $$ >> {self.pids}; sleep {LIFETIME} & echo $! >> {self.pids}; {nested} & wait"

    def listed(self) -> list[int]:
        lines = self.pids.read_text().split() if self.pids.exists() else []
        return [int(line) for line in lines if line.isdigit()]

    def started(self) -> int:
        """The step's process group, once all its processes run."""
        wait_until(lambda: len(self.listed()) == PROCESSES, f"{PROCESSES} pids in {self.pids}", 20.0)
        group = self.listed()[0]
        assert self.living() == sorted(self.listed())
        return group

    def living(self) -> list[int]:
        """The processes of the step's group that are not dead (zombies are)."""
        listed = self.listed()
        if not listed:
            return []
        group = listed[0]
        found: list[int] = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                stat = proc_stat(int(entry.name))
                if stat is not None and stat[1] == group and stat[0] not in "ZX":
                    found.append(int(entry.name))
        return sorted(found)

    def wait_gone(self, timeout: float = GONE_WITHIN) -> None:
        wait_until(lambda: not self.living(), "end of the step's processes", timeout)
        for pid in self.listed():
            stat = proc_stat(pid)
            assert stat is None or stat[0] in "ZX", f"process {pid} of the step is alive: {stat}"

    def kill(self) -> None:
        """Kill what is left of the step's group."""
        for pid in self.living():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    made = Family(tmp_path / "step.pids")
    yield made
    made.kill()


@pytest.fixture
def runservice() -> Iterator[RunserviceStandIn]:
    standin = RunserviceStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def executors(runservice: RunserviceStandIn, tmp_path: Path) -> Iterator[MakeExecutor]:
    """Makes started executors on ``tmp_path/data``; stops them after the test."""
    made: list[Executor] = []

    def make(**options: Any) -> Executor:
        options.setdefault("shared_user", True)  # the steps write their pids to the test's folder
        options.setdefault("executor_id", EXECUTOR_ID)
        options.setdefault("interval", 0.05)
        executor = Executor(runservice.url, tmp_path / "data", **options)
        made.append(executor)
        return executor.start()

    yield make
    for executor in made:
        executor.stop()


def fail_as_the_checker_does(runservice: RunserviceStandIn, task_id: str) -> int:
    """Delete the executor and fail its task ("executor deleted"); how many reports came before."""
    with runservice.lock:
        runservice.executors.pop(EXECUTOR_ID, None)
        task = runservice.tasks[task_id]
        ended = datetime.now(UTC)
        states = [
            attrs.evolve(state, phase=FAILED, end_time=ended) if state.phase is RUNNING else state
            for state in task.step_states
        ]
        failed = attrs.evolve(
            task, phase=FAILED, end_time=ended, step_states=states, error="executor deleted"
        )
        runservice.tasks[task_id] = failed
        return len(runservice.task_reports)


def reports_of(runservice: RunserviceStandIn, task_id: str, since: int) -> list[ExecutorTaskStatus]:
    with runservice.lock:
        return [status for tid, status in runservice.task_reports[since:] if tid == task_id]


def test_an_unassigned_task_loses_its_step_processes(
    runservice: RunserviceStandIn,
    executors: MakeExecutor,
    family: Family,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "runstore.executor")
    runservice.add_task(make_task("t1", [run(family.command()), run("echo never")]))
    runservice.add_task(make_task("other", [run(wait_file("go"))]))
    executors()
    family.started()
    runservice.wait_task("other", lambda task: step_phase(task, 0) is RUNNING)

    runservice.remove_task("t1")  # as the runservice's fetcher does, or a deleted run
    family.wait_gone()
    wait_until(lambda: not task_dir(tmp_path, "t1").exists(), "the folder of t1 removed")
    messages = [record.getMessage() for record in caplog.records]
    assert any("task t1: the task is no longer assigned" in message for message in messages), messages
    assert not any("t1: reporting" in message for message in messages), messages  # nothing more sent

    (task_dir(tmp_path, "other") / "workspace" / "go").touch()
    assert runservice.wait_finished("other").phase is SUCCESS


def test_a_task_the_runservice_failed_loses_its_step_processes_without_stalling_others(
    runservice: RunserviceStandIn,
    executors: MakeExecutor,
    family: Family,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grace = 4.0  # a longer grace time: the other task ends well within it, even on a busy machine
    monkeypatch.setattr(executor_steps, "KILL_GRACE", grace)
    runservice.add_task(make_task("t1", [run(family.command(ignore_term=True)), run("echo never")]))
    runservice.add_task(make_task("other", [run(wait_file("go"))]))
    executors()
    family.started()
    runservice.wait_task("t1", lambda task: step_phase(task, 0) is RUNNING)
    runservice.wait_task("other", lambda task: step_phase(task, 0) is RUNNING)

    before = fail_as_the_checker_does(runservice, "t1")
    (task_dir(tmp_path, "other") / "workspace" / "go").touch()
    assert runservice.wait_finished("other", timeout=GONE_WITHIN).phase is SUCCESS
    assert family.living(), "SIGTERM is ignored: the group lives for the grace time, the loop goes on"
    family.wait_gone(timeout=grace + 5.0)

    log_file = task_dir(tmp_path, "t1") / "logs" / "steps" / "0.log"
    wait_until(lambda: "step failed" in log_file.read_text(), "the end of the step's log")
    log = log_file.read_text()
    assert "killed by signal SIGKILL" in log, log
    assert "stopped (the runservice ended the task: executor deleted)" in log, log
    assert not (task_dir(tmp_path, "t1") / "logs" / "steps" / "1.log").exists()
    assert runservice.task("t1").error == "executor deleted"
    assert reports_of(runservice, "t1", before) == []  # the runservice's record stays its own


def test_stop_kills_the_step_processes_after_the_grace_time(
    runservice: RunserviceStandIn, executors: MakeExecutor, family: Family, tmp_path: Path
) -> None:
    runservice.add_task(make_task("t1", [run(family.command(ignore_term=True)), run("echo never")]))
    executor = executors()
    family.started()
    runservice.wait_task("t1", lambda task: step_phase(task, 0) is RUNNING)
    started = time.monotonic()
    executor.stop()
    assert time.monotonic() - started >= KILL_GRACE
    family.wait_gone(timeout=1.0)  # stop() returned: nothing is left
    task = runservice.task("t1")
    assert (task.phase, task.error) == (FAILED, "executor stopped")
    assert task.step_states[0].phase is FAILED
    assert task.step_states[0].exit_code == 128 + signal.SIGKILL


class HangingRunservice(RunserviceStandIn):
    """A stand-in whose task lists hang, once ``hang`` is set, until ``release`` is."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.hanging = threading.Event()
        self.release = threading.Event()

    async def executor_tasks(self, request: Request, executor_id: str) -> Response:
        if self.hang.is_set():
            self.hanging.set()
            await asyncio.to_thread(self.release.wait, 20.0)
        return await super().executor_tasks(request, executor_id)


def test_stop_kills_the_step_processes_at_once_while_the_runservice_hangs(
    family: Family, tmp_path: Path
) -> None:
    runservice = HangingRunservice()
    runservice.start()
    executor = Executor(
        runservice.url, tmp_path / "data", executor_id=EXECUTOR_ID, interval=0.05, shared_user=True
    )
    stopper = threading.Thread(target=executor.stop, daemon=True)
    try:
        runservice.add_task(make_task("t1", [run(family.command())]))
        executor.start()
        family.started()
        runservice.hang.set()
        runservice.changes.bump(EXECUTOR_ID)  # ends the long poll under way: the next one hangs
        assert runservice.hanging.wait(10.0), "the executor's loop did not ask for its tasks"
        stopper.start()  # the loop waits for the runservice: stop() must not wait for it first
        family.wait_gone()
        stopper.join(10.0)
        assert not stopper.is_alive()  # nor at all: a loop waiting on a poll holds nothing
    finally:
        runservice.release.set()
        if stopper.ident is not None:
            stopper.join(30.0)
        executor.stop()
        runservice.stop()
    assert not stopper.is_alive()


@pytest.mark.parametrize("how", ["unassigned", "sigterm"])
def test_executor_process_kills_the_step_processes(
    runservice: RunserviceStandIn, family: Family, tmp_path: Path, how: str
) -> None:
    runservice.add_task(make_task("t1", [run(family.command()), run("echo never")]))
    process, _ = start_cli(runservice, tmp_path)
    try:
        family.started()
        runservice.wait_task("t1", lambda task: step_phase(task, 0) is RUNNING)
        if how == "unassigned":
            runservice.remove_task("t1")
            family.wait_gone()
            assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        family.wait_gone(timeout=1.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    if how == "sigterm":
        task = runservice.task("t1")
        assert (task.phase, task.error) == (FAILED, "executor stopped")
        assert task.step_states[0].exit_code == 128 + signal.SIGTERM
