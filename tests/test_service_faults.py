"""Faults of the runservice (issue 11, §3): lost status reports, deleted live executors, bad reports.

Each test runs the runservice in process over a ``MemoryStorage``; where the claim is about
an executor, a real :class:`Executor` runs the task over HTTP on loopback.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import attrs
import pytest
import urllib3

from objstore import MemoryStorage
from runstore.contract import codec
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import InternalError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    FetchPhase,
    Run,
    RunConfig,
    RunPhase,
    RunResult,
    RunTask,
    Step,
    StepKind,
    StepState,
    TaskConfig,
    TaskStatus,
)
from runstore.contract.routes import RunServiceRoutes as R
from runstore.executor.executor import Executor
from runstore.runservice.api import RunServiceApp, serve
from runstore.runservice.lease import LEASE_KEY
from runstore.runservice.service import RunService
from runstore.runservice.state import State
from runstore.runservice.tasks import fresh_task
from tests.waiting import wait_for

T = TypeVar("T")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(seconds=5)
GROUP = "/project/p1/branch/main"
HELLO = RunConfig([TaskConfig("hello", [Step(StepKind.RUN, command="echo hello")])])
TWO = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make"), Step(StepKind.RUN, command="ok")])])
SUCCEEDED = StepState(ExecutorTaskPhase.SUCCESS, exit_code=0)
POLL = 0.05


def snapshot(service: RunService) -> dict[str, bytes]:
    """What the store holds, but the lease (which its renewal rewrites)."""
    storage = service.state.storage
    return {entry.key: storage.read_bytes(entry.key) for entry in storage.list() if entry.key != LEASE_KEY}


@pytest.fixture
def service() -> Iterator[RunService]:
    """A runservice holding its store's lease, whose loops the test drives."""
    service = RunService(MemoryStorage()).start(loops=False)
    yield service
    service.stop()


def assigned(service: RunService, config: RunConfig = TWO) -> ExecutorTask:
    """A run of ``config`` scheduled on an executor "ex1" that does not listen; its executor task."""
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 2))
    service.runs.create(config, GROUP)
    service.scheduler.schedule_once()
    (task,) = service.executors.tasks_of("ex1")
    return task


def run_task(service: RunService, executor_task: ExecutorTask) -> RunTask:
    (task,) = service.state.runs.get(executor_task.run_id).tasks
    return task


# -- 1. a final status settles a task whatever reports were lost before it ------------------


@pytest.mark.parametrize("end_time", [NOW, None], ids=["end-given", "no-times"])
def test_a_final_report_settles_a_task_whose_running_report_was_lost(
    service: RunService, end_time: datetime | None
) -> None:
    task = assigned(service)
    report = ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, end_time=end_time, step_states=[SUCCEEDED] * 2)
    service.executors.task_status(task.id, report)  # notstarted -> success: its running was lost
    settled = service.state.executor_tasks.get(task.id)
    assert settled.phase is ExecutorTaskPhase.SUCCESS
    assert settled.end_time is not None and (end_time is None or settled.end_time == end_time)
    assert settled.start_time == settled.end_time  # the start is unknown: start = end
    for state in settled.step_states:
        assert (state.phase, state.exit_code) == (ExecutorTaskPhase.SUCCESS, 0)
        assert state.start_time == state.end_time == settled.end_time
    followed = run_task(service, task)
    assert followed.status is TaskStatus.SUCCESS
    assert (followed.start_time, followed.end_time) == (settled.start_time, settled.end_time)
    assert followed.step_states == settled.step_states

    service.executors.task_status(task.id, report)  # sent again: nothing changes
    late = ExecutorTaskStatus(ExecutorTaskPhase.RUNNING, NOW, step_states=[StepState()] * 2)
    service.executors.task_status(task.id, late)  # a late running report: a finished task stays
    assert service.state.executor_tasks.get(task.id) == settled

    service.fetcher.executor_timeout = timedelta(0)  # "ex1" never listened: the fetch gives up at once
    service.executors.delete("ex1")
    service.fetcher.fetch_once()
    service.scheduler.schedule_once()
    run = service.state.runs.get(task.run_id)
    assert (run.phase, run.result) == (RunPhase.FINISHED, RunResult.SUCCESS)


def test_step_states_settle_like_the_task(service: RunService) -> None:
    task = assigned(service)
    later = datetime.now(UTC) + timedelta(seconds=5)
    first = [StepState(ExecutorTaskPhase.SUCCESS, exit_code=0), StepState(ExecutorTaskPhase.RUNNING)]
    service.executors.task_status(task.id, ExecutorTaskStatus(ExecutorTaskPhase.RUNNING, step_states=first))
    running = service.state.executor_tasks.get(task.id)
    assert running.start_time is not None
    ended, started = running.step_states
    assert ended.start_time == ended.end_time is not None  # its start and running reports were lost
    assert started.start_time is not None and started.end_time is None
    final = ExecutorTaskStatus(
        ExecutorTaskPhase.FAILED,
        end_time=later,
        step_states=[first[0], StepState(ExecutorTaskPhase.FAILED, exit_code=2)],
        error="step 1 failed",
    )
    service.executors.task_status(task.id, final)
    failed = service.state.executor_tasks.get(task.id)
    assert (failed.phase, failed.start_time, failed.end_time) == (
        ExecutorTaskPhase.FAILED,
        running.start_time,
        later,
    )
    assert failed.step_states[0] == ended  # known before: kept
    assert failed.step_states[1] == StepState(ExecutorTaskPhase.FAILED, started.start_time, later, 2)
    assert run_task(service, task).step_states == failed.step_states


def test_a_run_finishes_when_all_but_the_final_status_reports_are_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = RunService(MemoryStorage(), interval=POLL)
    apply = service.executors.task_status
    lost: list[ExecutorTaskPhase] = []

    def lossy(task_id: str, status: ExecutorTaskStatus) -> None:
        if not status.phase.finished:
            lost.append(status.phase)
            raise InternalError("lost on the way")
        apply(task_id, status)

    monkeypatch.setattr(service.executors, "task_status", lossy)
    server = serve(service)
    executor = Executor(server.url, tmp_path / "executor", executor_id="ex1", interval=POLL).start()
    try:
        run = service.runs.create(HELLO, GROUP)

        def finished() -> Run | None:
            current = service.state.runs.get(run.id)
            return current if current.phase is RunPhase.FINISHED else None

        done = wait_for("the run to finish", finished)
        assert ExecutorTaskPhase.RUNNING in lost  # the executor's running report never arrived
        assert done.result is RunResult.SUCCESS
        (task,) = done.tasks
        assert task.status is TaskStatus.SUCCESS and task.fetched
        assert task.start_time is not None and task.end_time is not None
        assert task.start_time <= task.end_time
        assert task.step_states[0].phase is ExecutorTaskPhase.SUCCESS
        with service.state.store.open_log(task.id, 0) as log:
            assert b"hello" in log.read()
    finally:
        executor.stop()
        server.stop()
        service.stop()


# -- 2. deleting a live executor keeps the logs it holds ---------------------------------------

TIMEOUT = timedelta(seconds=4)


@attrs.define
class Live:
    service: RunService
    executor: Executor
    client: RunServiceClient

    def finished_task(self) -> ExecutorTask:
        """Run HELLO on the executor; its executor task once it succeeded (not fetched)."""
        self.service.runs.create(HELLO, GROUP)
        self.service.scheduler.schedule_once()
        (task,) = self.service.executors.tasks_of("ex1")
        self.executor.run_once()  # starts it

        def succeeded() -> ExecutorTask | None:
            current = self.service.state.executor_tasks.get(task.id)
            return current if current.phase.finished else None

        done = wait_for("the task to succeed", succeeded)
        assert done.phase is ExecutorTaskPhase.SUCCESS
        return done


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A runservice whose loops the test drives, and a real executor that the test drives too."""
    service = RunService(MemoryStorage(), executor_timeout=TIMEOUT).start(loops=False)
    server = ServerThread(RunServiceApp(service)).start()
    # Its loop runs once (it registers), then waits an hour: the test calls run_once.
    executor = Executor(server.url, tmp_path / "executor", executor_id="ex1", interval=3600).start()
    client = RunServiceClient(server.url)
    try:
        wait_for("the executor to register", lambda: service.state.executors.exists("ex1") or None)
        yield Live(service, executor, client)
    finally:
        executor.stop()
        client.close()
        server.stop()
        service.stop()


def test_a_deleted_executor_that_comes_back_gives_its_logs(live: Live) -> None:
    service = live.service
    task = live.finished_task()
    live.executor.run_once()  # a status report just now
    live.client.delete_executor("ex1")
    assert not service.state.executors.exists("ex1")
    service.fetcher.fetch_once()
    waiting = run_task(service, task)
    assert service.state.executor_tasks.exists(task.id)  # the fetch waits for the executor
    assert (waiting.setup_log_fetch, waiting.step_log_fetch) == (
        FetchPhase.NOTSTARTED,
        [FetchPhase.NOTSTARTED],
    )

    live.executor.run_once()  # it registers again, with the task's files on its disk
    assert service.state.executors.exists("ex1")
    service.fetcher.fetch_once()
    fetched = run_task(service, task)
    assert (fetched.setup_log_fetch, fetched.step_log_fetch) == (FetchPhase.FINISHED, [FetchPhase.FINISHED])
    assert not service.state.executor_tasks.exists(task.id)
    with service.state.store.open_log(task.id, 0) as log:
        assert b"hello" in log.read()
    service.scheduler.schedule_once()
    run = service.state.runs.get(task.run_id)
    assert (run.phase, run.result) == (RunPhase.FINISHED, RunResult.SUCCESS)


def test_the_fetch_gives_up_once_the_executor_stayed_gone_past_the_timeout(live: Live) -> None:
    service = live.service
    task = live.finished_task()
    before_last_report = time.monotonic()
    live.executor.run_once()  # its last status report
    live.executor.stop()  # gone, and never back
    live.client.delete_executor("ex1")
    service.fetcher.fetch_once()
    assert service.state.executor_tasks.exists(task.id)  # not yet: it may come back

    def given_up() -> RunTask | None:
        service.fetcher.fetch_once()
        return None if service.state.executor_tasks.exists(task.id) else run_task(service, task)

    gone = wait_for("the fetch to give up", given_up, timeout=TIMEOUT.total_seconds() + 15)
    assert time.monotonic() - before_last_report >= TIMEOUT.total_seconds() - 0.1
    assert (gone.setup_log_fetch, gone.step_log_fetch) == (FetchPhase.UNAVAILABLE, [FetchPhase.UNAVAILABLE])
    service.scheduler.schedule_once()
    assert service.state.runs.get(task.run_id).phase is RunPhase.FINISHED


def test_the_fetch_gives_up_at_once_on_a_reaped_executor(service: RunService) -> None:
    task = assigned(service, HELLO)
    report = ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, NOW, NOW, step_states=[SUCCEEDED])
    service.executors.task_status(task.id, report)
    later = time.monotonic() + 2 * TIMEOUT.total_seconds()
    service.executors.liveness.clock = lambda: later  # ex1 silent for twice the timeout
    service.executors.liveness.timeout = service.fetcher.executor_timeout = TIMEOUT
    service.reaper.reap_once()  # silent past the timeout: deleted, and not waited for
    assert not service.state.executors.exists("ex1")
    service.fetcher.fetch_once()
    assert not service.state.executor_tasks.exists(task.id)
    assert run_task(service, task).setup_log_fetch is FetchPhase.UNAVAILABLE


# -- 3. a bad report is refused, and a bad document stalls nothing else ------------------------


@pytest.fixture
def api(service: RunService) -> Iterator[str]:
    server = ServerThread(RunServiceApp(service)).start()
    yield server.url
    server.stop()


def put_status(url: str, task_id: str, status: ExecutorTaskStatus) -> tuple[int, dict[str, str]]:
    response = urllib3.request(
        R.task_status.method,
        url + R.task_status.path(task_id=task_id),
        body=codec.dumps(status),
        retries=False,
    )
    return response.status, json.loads(response.data)


FAILED_STEP = StepState(ExecutorTaskPhase.FAILED, NOW, NOW, 1)
RUNNING_STEP = StepState(ExecutorTaskPhase.RUNNING, NOW)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, NOW, NOW, [SUCCEEDED] * 3), "not 3"),
        (ExecutorTaskStatus(ExecutorTaskPhase.RUNNING, NOW, None, [RUNNING_STEP] * 3), "not 3"),
        (ExecutorTaskStatus(ExecutorTaskPhase.RUNNING, NOW, None, [RUNNING_STEP]), "not 1"),
        (ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, NOW, NOW, [SUCCEEDED, FAILED_STEP]), "succeeded"),
        (ExecutorTaskStatus(ExecutorTaskPhase.FAILED, NOW, NOW, [SUCCEEDED, RUNNING_STEP]), "still running"),
        (
            ExecutorTaskStatus(ExecutorTaskPhase.NOTSTARTED, step_states=[SUCCEEDED, StepState()]),
            "notstarted",
        ),
        (ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, LATER, NOW, [SUCCEEDED] * 2), "before it starts"),
        (
            ExecutorTaskStatus(
                ExecutorTaskPhase.FAILED, NOW, LATER, [StepState(ExecutorTaskPhase.FAILED, LATER, NOW, 1)] * 2
            ),
            "step 0",
        ),
    ],
    ids=[
        "too-many",
        "too-many-running",
        "too-few",
        "success-failed-step",
        "running-step",
        "notstarted-step-ran",
        "times",
        "step-times",
    ],
)
def test_a_report_that_does_not_fit_the_steps_is_refused(
    service: RunService, api: str, status: ExecutorTaskStatus, message: str
) -> None:
    task = assigned(service)
    before = snapshot(service)
    code, answer = put_status(api, task.id, status)
    assert (code, answer["kind"]) == (400, "bad_request"), answer
    assert message in answer["message"] and task.id in answer["message"]
    assert snapshot(service) == before
    service.fetcher.fetch_once()  # and nothing for the fetcher to trip over
    assert snapshot(service) == before


def test_bad_documents_stall_no_other_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runstore.runservice")
    storage = MemoryStorage()
    seed = State(storage)  # written before the runservice starts, as by other means
    # Written by other means, named to come first in every listing: a run whose finished
    # task has one step state too many (and its executor task), and unreadable documents.
    steps = [Step(StepKind.RUN, command="true")]
    bad_task = attrs.evolve(
        fresh_task("bad", steps, [], {}),
        id="task-0-bad",
        status=TaskStatus.SUCCESS,
        step_states=[SUCCEEDED, SUCCEEDED],
    )
    seed.runs.put("run-0-bad", Run("run-0-bad", GROUP, "projects/p1", [bad_task], phase=RunPhase.RUNNING))
    bad_executor_task = ExecutorTask(
        "task-0-bad",
        "run-0-bad",
        "ex1",
        "bad",
        steps,
        phase=ExecutorTaskPhase.SUCCESS,
        step_states=[SUCCEEDED] * 2,
    )
    seed.executor_tasks.put("task-0-bad", bad_executor_task)
    seed.storage.write("runservice/runs/run-0-garbage.json", b"{not json")
    seed.storage.write("runservice/executortasks/task-0-garbage.json", b'{"id": 5}')
    seed.storage.write("runservice/executors/ex0-garbage.json", b"[]")
    service = RunService(storage, interval=POLL)
    server = serve(service)
    executor = Executor(
        server.url, tmp_path / "executor", executor_id="ex1", active_tasks_limit=3, interval=POLL
    ).start()
    try:
        runs = [service.runs.create(HELLO, GROUP), service.runs.create(TWO, GROUP)]

        def finished() -> list[Run] | None:
            current = [service.state.runs.get(run.id) for run in runs]
            return current if all(run.phase is RunPhase.FINISHED for run in current) else None

        hello, two = wait_for("the good runs to finish", finished)
        assert hello.result is RunResult.SUCCESS and hello.tasks[0].fetched
        with service.state.store.open_log(hello.tasks[0].id, 0) as log:
            assert b"hello" in log.read()
        assert two.tasks[0].status.finished and two.tasks[0].fetched
    finally:
        executor.stop()
        server.stop()
        service.stop()
    assert service.state.executor_tasks.exists("task-0-bad")  # the bad one stays, for a human to look at
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and "fetching task task-0-bad" in record.getMessage()
    ]
    assert len(errors) == 1 and "IndexError" in errors[0].getMessage()  # logged once, not every pass


def test_a_corrupt_document_is_an_internal_error_naming_it(service: RunService, api: str) -> None:
    service.state.storage.write("runservice/runs/run-x.json", b"{not json")
    response = urllib3.request("GET", api + R.get_run.path(run_id="run-x"), retries=False)
    answer = json.loads(response.data)
    assert (response.status, answer["kind"]) == (500, "internal")
    assert answer["message"].startswith("run 'run-x' is not a valid document: malformed JSON")
