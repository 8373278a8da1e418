"""The runservice moves on events, from memory: the store requests it makes, its long polls,
its sweep, and what a runservice that takes over reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from objstore import MemoryStorage, Storage
from runstore.contract import codec
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import NotExistError
from runstore.contract.model import (
    Executor,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    RunConfig,
    RunPhase,
    Step,
    StepKind,
    StepState,
    TaskConfig,
    TaskStatus,
)
from runstore.executor.executor import Executor as ExecutorProcess
from runstore.runservice.api import serve
from runstore.runservice.service import RunService
from tests.storage_log import RequestLog
from tests.waiting import wait_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GROUP = "/project/p1/branch/main"
URL = "http://127.0.0.1:1"
ONE = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make"), Step(StepKind.RUN, command="ok")])])
RUNNING, SUCCESS = ExecutorTaskPhase.RUNNING, ExecutorTaskPhase.SUCCESS


@pytest.fixture
def log() -> RequestLog:
    return RequestLog(MemoryStorage())


@pytest.fixture
def service(log: RequestLog) -> Iterator[RunService]:
    """A runservice holding its store's lease, whose loops the test drives."""
    service = RunService(log).start(loops=False)
    yield service
    service.stop()


def assigned(service: RunService, executor_id: str = "ex1") -> ExecutorTask:
    """A run of ONE created and scheduled on a registered executor; its executor task."""
    service.executors.report(executor_id, ExecutorStatus(URL, 2))
    service.runs.create(ONE, GROUP)
    service.scheduler.schedule_once()
    (task,) = service.executors.tasks_of(executor_id)
    return task


def poll(service: RunService, after: str = "", wait: float = 0.0) -> tuple[str, list[ExecutorTask]]:
    answer = asyncio.run(service.executors.poll("ex1", after, wait))
    return answer.version, answer.tasks


def stored(storage: Storage, task_id: str) -> ExecutorTask:
    return codec.loads(ExecutorTask, storage.read_bytes(f"runservice/executortasks/{task_id}.json"))


@pytest.mark.parametrize("executors", [0, 1, 20])
def test_an_idle_runservice_makes_no_request_whatever_its_executors(
    log: RequestLog, service: RunService, executors: int
) -> None:
    assigned(service, "busy")  # a run under way, waiting for its task
    for number in range(executors):
        service.executors.report(f"ex{number}", ExecutorStatus(URL, 2))
    before = len(log.requests)
    for _ in range(20):
        for number in range(executors):  # each executor reports and polls, as it does while idle
            service.executors.report(f"ex{number}", ExecutorStatus(URL, 2, []))
            asyncio.run(service.executors.poll(f"ex{number}", "", 0))
        service.run_once()
    assert log.since(before) == []


def test_step_reports_stay_in_memory_until_the_phase_moves(log: RequestLog, service: RunService) -> None:
    task = assigned(service)
    key = f"runservice/executortasks/{task.id}.json"
    before = len(log.requests)
    service.executors.task_status(
        task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=[StepState(RUNNING, NOW), StepState()])
    )
    assert log.since(before) == [("write", key)]  # the executor task only: its run follows in memory

    before = len(log.requests)
    progress = [StepState(SUCCESS, NOW, NOW, 0), StepState(RUNNING, NOW)]
    service.executors.task_status(task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=progress))
    assert log.since(before) == []
    assert service.state.executor_tasks.get(task.id).step_states == progress
    assert service.runs.get(task.run_id).tasks[0].step_states == progress
    assert stored(log, task.id).step_states[0].phase is RUNNING  # the store lags behind

    done = [StepState(SUCCESS, NOW, NOW, 0), StepState(SUCCESS, NOW, NOW, 0)]
    service.executors.task_status(task.id, ExecutorTaskStatus(SUCCESS, NOW, NOW, step_states=done))
    assert stored(log, task.id) == service.state.executor_tasks.get(task.id)
    assert stored(log, task.id).step_states == done


def test_stop_writes_what_memory_alone_has(log: RequestLog, service: RunService) -> None:
    task = assigned(service)
    progress = [StepState(SUCCESS, NOW, NOW, 0), StepState(RUNNING, NOW)]
    service.executors.task_status(task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=progress))
    service.stop()
    assert stored(log, task.id).step_states == progress
    run = codec.loads(
        type(service.runs.get(task.run_id)), log.read_bytes(f"runservice/runs/{task.run_id}.json")
    )
    assert run.tasks[0].status is TaskStatus.RUNNING


def test_a_runservice_that_takes_over_reads_the_store_and_follows_every_executor_task(
    log: RequestLog, service: RunService
) -> None:
    task = assigned(service)
    progress = [StepState(SUCCESS, NOW, NOW, 0), StepState(RUNNING, NOW)]
    service.executors.task_status(
        task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=[StepState(RUNNING, NOW), StepState()])
    )
    service.executors.task_status(task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=progress))
    later = time.monotonic() + 3600
    service.executors.liveness.clock = lambda: later  # ex1 silent for an hour, as this runservice sees it
    service.lease.release()  # dies without writing what memory alone has

    second = RunService(log).start(loops=False)
    try:
        executor_task = second.state.executor_tasks.get(task.id)
        assert executor_task.phase is RUNNING  # as written: the step progress was in memory only
        assert executor_task.step_states[0].phase is RUNNING
        assert second.runs.get(task.run_id).tasks[0].status is TaskStatus.RUNNING  # followed again
        second.run_once()
        assert second.state.executors.exists("ex1")  # given the full timeout from the takeover
        assert second.executors.liveness.alive("ex1")
        second.executors.task_status(task.id, ExecutorTaskStatus(RUNNING, NOW, step_states=progress))
        assert second.runs.get(task.run_id).tasks[0].step_states == progress  # the executor says it again
    finally:
        second.stop()


def test_the_sweep_reads_what_was_written_by_other_means(log: RequestLog, service: RunService) -> None:
    log.write("runservice/executors/ex9.json", codec.dumps(Executor("ex9", URL, 1)))
    assert not service.state.executors.exists("ex9")  # memory answers until the sweep
    before = len(log.requests)
    service.sweep()
    assert service.state.executors.exists("ex9")
    requests = log.since(before)
    assert sorted(kind for kind, _ in requests) == ["list", "list", "list", "read", "stat"]


def test_a_long_poll_is_answered_once_a_task_is_assigned(service: RunService) -> None:
    service.executors.report("ex1", ExecutorStatus(URL, 2))
    version, tasks = poll(service)
    assert tasks == []

    async def assigning() -> tuple[bool, list[ExecutorTask]]:
        waiting = asyncio.create_task(service.executors.poll("ex1", version, 20))
        await asyncio.sleep(0.05)
        waited = not waiting.done()
        service.runs.create(ONE, GROUP)
        await asyncio.to_thread(service.scheduler.schedule_once)
        return waited, (await asyncio.wait_for(waiting, 10)).tasks

    waited, tasks = asyncio.run(assigning())
    assert waited
    assert [task.task_name for task in tasks] == ["build"]


def test_a_long_poll_with_another_version_is_answered_at_once(service: RunService) -> None:
    service.executors.report("ex1", ExecutorStatus(URL, 2))
    started = time.monotonic()
    version, _ = poll(service, "0123abcd.7", 20)  # a version an earlier runservice gave
    assert time.monotonic() - started < 10
    assert version != "0123abcd.7"


def test_a_long_poll_waits_a_third_of_the_executor_timeout_at_most() -> None:
    service = RunService(MemoryStorage(), executor_timeout=timedelta(seconds=0.3)).start(loops=False)
    try:
        service.executors.report("ex1", ExecutorStatus(URL, 2))
        assert service.executors.max_wait == pytest.approx(0.1)
        version, _ = poll(service)
        assert poll(service, version, 25)[0] == version  # answered, unchanged, after max_wait
    finally:
        service.stop()


def test_an_unregistered_executor_is_told_so_at_once(service: RunService) -> None:
    with pytest.raises(NotExistError, match="not registered"):
        poll(service, "", 20)


def test_the_loops_run_when_woken_not_on_a_timer(log: RequestLog) -> None:
    service = RunService(log, interval=3600).start()  # the loops' fallback: an hour
    try:
        service.executors.report("ex1", ExecutorStatus(URL, 2))
        service.runs.create(ONE, GROUP)
        (task,) = wait_for("the task assigned", lambda: service.executors.tasks_of("ex1") or None)
        service.executors.task_status(task.id, ExecutorTaskStatus(ExecutorTaskPhase.FAILED, NOW, NOW))
        wait_for("the run to know", lambda: service.runs.get(task.run_id).tasks[0].status.finished or None)
    finally:
        service.stop()


def test_a_one_step_task_costs_at_most_20_requests_from_creation_to_its_fetched_log(
    log: RequestLog, tmp_path: Path
) -> None:
    service = RunService(log)
    server = serve(service)
    executor = ExecutorProcess(server.url, tmp_path, executor_id="ex1", shared_user=True).start()
    client = RunServiceClient(server.url)
    try:
        wait_for("the executor to register", lambda: service.state.executors.exists("ex1"))
        before = len(log.requests)
        run = client.create_run(RunConfig([TaskConfig("t", [Step(StepKind.RUN, command="true")])]), GROUP)
        active = service.state.index.active  # from memory: the test's probe makes no request
        wait_for("the run to finish", lambda: run.id not in {entry.run_id for entry in active()})
        requests = log.since(before)
        assert service.runs.get(run.id).phase is RunPhase.FINISHED
        assert len(requests) <= 20, requests
        assert {kind for kind, _ in requests} == {"write", "delete"}, requests  # memory reads, nothing lists
    finally:
        client.close()
        executor.stop()
        server.stop()
        service.stop()
