"""The runservice on its own: configs, transitions, the checker, the lease, the HTTP API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import urllib3

from objstore import MemoryStorage, Storage
from runstore.contract.errors import BadRequestError, ConflictError, LeaseHeldError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    ExecutorStatus,
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
from runstore.contract.routes import Route, RunServiceRoutes
from runstore.runservice.api import RunServiceApp
from runstore.runservice.lease import Lease
from runstore.runservice.service import RunService

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ONE = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make"), Step(StepKind.RUN, command="ok")])])


@pytest.fixture
def service() -> Iterator[RunService]:
    """A runservice holding its store's lease, whose loops the test drives."""
    service = RunService(MemoryStorage()).start(loops=False)
    yield service
    service.stop()


def assigned(service: RunService) -> str:
    """Create a run of ONE with one executor, schedule it; the executor task's id."""
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 2))
    run = service.runs.create(ONE, "/project/p1/branch/main")
    service.scheduler.schedule_once()
    (task,) = service.executors.tasks_of("ex1")
    assert task.run_id == run.id
    return task.id


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (RunConfig([]), "at least one task"),
        (RunConfig([TaskConfig("a", [])]), "no step"),
        (RunConfig([TaskConfig("a/b", [Step(StepKind.RUN, command="x")])]), "a/b"),
        (RunConfig([TaskConfig("a", [Step(StepKind.RUN)])]), "has none"),
        (RunConfig([TaskConfig("a", [Step(StepKind.SAVE_CACHE, paths=["x"])])]), "cache key"),
        (RunConfig([TaskConfig("a", [Step(StepKind.RUN, command="x")], depends=["b"])]), "unknown task 'b'"),
        (
            RunConfig(
                [
                    TaskConfig("a", [Step(StepKind.RUN, command="x")], depends=["b"]),
                    TaskConfig("b", [Step(StepKind.RUN, command="x")], depends=["a"]),
                ]
            ),
            "cycle",
        ),
    ],
)
def test_bad_run_configs_are_refused(service: RunService, config: RunConfig, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        service.runs.create(config, "/project/p1/branch/main")
    assert service.state.runs.ids() == []


def test_groups_decide_cache_groups(service: RunService) -> None:
    assert service.runs.create(ONE, "/project/p1/branch/feature/x").cache_group == "projects/p1"
    assert service.runs.create(ONE, "/project/p1/pr/12").cache_group == "projects/p1"
    run = service.runs.create(ONE, "/user/u1/branch/wip/deep/name", repo_uuid="repo-9")
    assert run.cache_group == "users/u1/repos/repo-9"
    assert run.group == "/user/u1/branch/wip/deep/name"  # a branch with "/" stays one element
    for group in ("/project/p1", "/project/p1/pr/x", "/user/u1/branch/b", "project/p1/branch/b"):
        with pytest.raises(BadRequestError):
            service.runs.create(ONE, group)


def test_only_allowed_transitions_are_applied(service: RunService) -> None:
    task_id = assigned(service)
    run_id = service.state.executor_tasks.get(task_id).run_id
    running = ExecutorTaskStatus(
        ExecutorTaskPhase.RUNNING, start_time=NOW, step_states=[StepState(), StepState()]
    )
    service.executors.task_status(task_id, running)
    assert service.state.runs.get(run_id).tasks[0].status is TaskStatus.RUNNING
    service.executors.task_status(task_id, ExecutorTaskStatus(ExecutorTaskPhase.NOTSTARTED))
    assert service.state.runs.get(run_id).tasks[0].status is TaskStatus.RUNNING  # never back to notstarted
    service.executors.task_status(
        task_id, ExecutorTaskStatus(ExecutorTaskPhase.FAILED, NOW, NOW, error="boom")
    )
    task = service.state.runs.get(run_id).tasks[0]
    assert (task.status, task.error) == (TaskStatus.FAILED, "boom")
    service.executors.task_status(task_id, running)
    assert service.state.runs.get(run_id).tasks[0].status is TaskStatus.FAILED  # never back to running


def test_checker_fails_tasks_of_deleted_executors(service: RunService) -> None:
    task_id = assigned(service)
    run_id = service.state.executor_tasks.get(task_id).run_id
    states = [StepState(ExecutorTaskPhase.SUCCESS, NOW, NOW, 0), StepState(ExecutorTaskPhase.RUNNING, NOW)]
    service.executors.task_status(
        task_id, ExecutorTaskStatus(ExecutorTaskPhase.RUNNING, NOW, step_states=states)
    )
    service.checker.check_once()
    assert service.state.executor_tasks.get(task_id).phase is ExecutorTaskPhase.RUNNING  # its executor exists
    service.executors.delete("ex1")
    assert service.state.executor_tasks.exists(task_id)  # deleting an executor touches no task
    service.checker.check_once()
    failed = service.state.executor_tasks.get(task_id)
    assert (failed.phase, failed.error) == (ExecutorTaskPhase.FAILED, "executor deleted")
    assert failed.end_time is not None
    assert failed.step_states[0] == states[0]
    assert failed.step_states[1].phase is ExecutorTaskPhase.FAILED and failed.step_states[1].end_time
    task = service.state.runs.get(run_id).tasks[0]
    assert task.status is TaskStatus.FAILED and task.end_time == failed.end_time
    assert task.step_states[1].end_time == failed.end_time
    service.fetcher.executor_timeout = timedelta(0)  # gone past the timeout: the fetch gives up
    service.fetcher.fetch_once()  # nothing can be fetched from a gone executor: the executor task goes
    assert not service.state.executor_tasks.exists(task_id)
    service.scheduler.schedule_once()
    run = service.state.runs.get(run_id)
    assert run.phase is RunPhase.FINISHED and run.result.value == "failed"
    with pytest.raises(ConflictError):
        service.runs.restart(service.runs.create(ONE, "/project/p1/branch/main").id)


def test_reaper_deletes_silent_executors(service: RunService) -> None:
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 1))
    later = time.monotonic() + 2 * service.executors.liveness.timeout.total_seconds()
    service.executors.liveness.clock = lambda: later  # silent since: nothing was written
    service.reaper.reap_once()
    assert service.state.executors.ids() == []


def test_one_runservice_owns_a_store() -> None:
    storage: Storage = MemoryStorage()
    first = Lease(storage, "first", timedelta(seconds=30))
    first.acquire(wait=False)
    second = Lease(storage, "second", timedelta(seconds=30))
    with pytest.raises(LeaseHeldError, match="first"):
        second.acquire(wait=False)
    first.renew()
    first.release()
    second.acquire(wait=False)
    with pytest.raises(LeaseHeldError):
        first.renew()
    other = MemoryStorage()
    crashed = Lease(other, "crashed", timedelta(seconds=-1))  # a lease nobody renews expires
    crashed.acquire(wait=False)
    successor = Lease(other, "successor", timedelta(seconds=30))
    successor.acquire(wait=False)
    assert successor.holder() == "successor"
    with pytest.raises(LeaseHeldError):
        crashed.renew()


@pytest.fixture
def api(service: RunService) -> Iterator[str]:
    server = ServerThread(RunServiceApp(service)).start()
    yield server.url
    server.stop()


R = RunServiceRoutes


def at(route: Route, query: str = "", *, base: str = "", **values: str | int) -> tuple[str, str]:
    """The method and URL of a request to ``route`` (``base`` + its path + ``?query``)."""
    return route.method, base + route.path(**values) + (f"?{query}" if query else "")


EX1 = at(R.put_executor, executor_id="ex1")


def call(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, object]]:
    response = urllib3.request(method, url, body=body, retries=False)
    return response.status, json.loads(response.data)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        (*EX1, b"{not json", 400, "malformed JSON"),
        (
            *EX1,
            b'{"listen_url": 1, "active_tasks_limit": 1}',
            400,
            "listen_url",
        ),
        (*EX1, b'{"listen_url": "u"}', 400, "active_tasks_limit"),
        (
            *EX1,
            b'{"listen_url": "u", "active_tasks_limit": 0}',
            400,
            "at least 1",
        ),
        (
            *EX1,
            b'{"listen_url": "u", "active_tasks_limit": 1, "x": 1}',
            400,
            "unknown",
        ),
        (*at(R.put_executor, executor_id=".hidden"), b"{}", 400, "executor id"),
        (*at(R.executor_tasks, executor_id="nobody"), None, 404, "not registered"),
        (*at(R.task_status, task_id="nope"), b'{"phase": "running"}', 404, "does not exist"),
        (*at(R.task_status, task_id="nope"), b'{"phase": "flying"}', 400, "flying"),
        (*at(R.get_run, run_id="nope"), None, 404, "does not exist"),
        (*at(R.delete_run, run_id="nope"), None, 404, "does not exist"),
        (*at(R.create_run, "group=/project/p/branch/b"), b'{"tasks": []}', 400, "at least one task"),
        (*at(R.archive, task_id="t1", step="x"), None, 400, "invalid step 'x'"),
        (*at(R.archive, task_id="t1", step=0), None, 404, "no archive"),
        (*at(R.restore_cache, "group=projects/p1"), None, 400, "key"),
        (*at(R.restore_cache, "group=../x&key=k"), None, 400, "cache group"),
        ("GET", "/api/v1/nowhere", None, 404, ""),  # no route
        ("PATCH", R.get_run.path(run_id="x"), None, 405, ""),  # no such method
    ],
)
def test_bad_requests_get_4xx_and_change_nothing(
    api: str, service: RunService, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    before = sorted(entry.key for entry in service.state.storage.list())
    got, answer = call(method, api + path, body)
    assert got == status
    assert answer["kind"] in ("bad_request", "not_exist") or status == 405
    assert message in str(answer["message"])
    assert sorted(entry.key for entry in service.state.storage.list()) == before


# One rule for a step in a URL, on every endpoint that takes one: a decimal int >= 0
# without leading zeros, below the task's step count where that is known.
BAD_STEPS = [
    ("01", "'01'"),
    ("-1", "'-1'"),
    ("+1", "'+1'"),
    (" 1", "' 1'"),
    ("x", "'x'"),
    ("1234567890", "'1234567890'"),
]


@pytest.mark.parametrize(("step", "named"), BAD_STEPS)
def test_an_archive_step_breaking_the_rule_is_a_400_naming_it(api: str, step: str, named: str) -> None:
    status, answer = call(*at(R.archive, task_id="t1", step=step, base=api))
    assert (status, answer["kind"]) == (400, "bad_request"), answer
    assert f"invalid step {named}" in str(answer["message"])


@pytest.mark.parametrize(("step", "named"), [*BAD_STEPS, ("2", "'2'"), ("10", "'10'")])
def test_a_log_step_breaking_the_rule_is_a_400_naming_it(
    api: str, service: RunService, step: str, named: str
) -> None:
    run = service.runs.create(ONE, "/project/p1/branch/main")  # its task has 2 steps
    status, answer = call(*at(R.run_log, run_id=run.id, task_name="build", step=step, base=api))
    assert (status, answer["kind"]) == (400, "bad_request"), answer
    assert f"invalid step {named}" in str(answer["message"])


@pytest.mark.parametrize("step", ["setup", "0", "1"])
def test_a_log_step_within_the_rule_is_looked_up(api: str, service: RunService, step: str) -> None:
    run = service.runs.create(ONE, "/project/p1/branch/main")
    status, answer = call(*at(R.run_log, run_id=run.id, task_name="build", step=step, base=api))
    assert (status, answer["kind"]) == (404, "not_exist"), answer  # no log yet


def test_internal_errors_do_not_leak(api: str, service: RunService, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret internals at /etc/shadow")

    monkeypatch.setattr(service.executors, "report", broken)
    status, answer = call(
        *at(R.put_executor, executor_id="ex1", base=api), b'{"listen_url": "u", "active_tasks_limit": 1}'
    )
    assert (status, answer) == (500, {"kind": "internal", "message": "internal error"})
