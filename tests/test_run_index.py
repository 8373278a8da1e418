"""The indexes of runs: listing newest first, pages, filters, what crashes leave, and the
cost of a pass, counted in storage requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from objstore import MemoryStorage
from objstore.testing import CountingStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import BadRequestError, RemoteServiceError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    Executor,
    ExecutorTaskPhase,
    FetchPhase,
    Run,
    RunConfig,
    RunPhase,
    RunResult,
    Step,
    StepKind,
    StepState,
    TaskConfig,
    TaskStatus,
)
from runstore.contract.routes import RunServiceRoutes
from runstore.runservice import index
from runstore.runservice.absences import Absences
from runstore.runservice.api import RunServiceApp
from runstore.runservice.attempts import Attempts
from runstore.runservice.collector import Collector
from runstore.runservice.executors import Executors
from runstore.runservice.index import LISTED, Listed, RunIndex
from runstore.runservice.runs import Runs
from runstore.runservice.scheduler import Scheduler
from runstore.runservice.service import RunService
from runstore.runservice.state import State

ONE = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make")])])
TIMEOUT = timedelta(seconds=30)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def scheduler_of(state: State) -> Scheduler:
    return Scheduler(state, Attempts(), Executors(state, Absences(), Attempts(), timeout=TIMEOUT))


@pytest.fixture
def state() -> State:
    return State(MemoryStorage())


def finish(state: State, run: Run, result: RunResult = RunResult.SUCCESS) -> Run:
    """Mark ``run`` finished as the scheduler does: its document, then its active entry."""
    done = state.runs.update(
        run.id, lambda current: attrs.evolve(current, phase=RunPhase.FINISHED, result=result)
    )
    state.index.finished(run.id)
    assert done is not None
    return done


def make_runs(state: State, groups: list[str]) -> list[Run]:
    runs = Runs(state)
    return [runs.create(ONE, group) for group in groups]


def test_runs_list_newest_first_in_pages(state: State) -> None:
    created = make_runs(state, [f"/project/p{i % 3}/branch/main" for i in range(12)])
    runs = Runs(state)
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = runs.list(limit=5, cursor=cursor)
        seen += [run.id for run in page.runs]
        cursor = page.next
        if not cursor:
            break
    assert seen == [run.id for run in reversed(created)]
    with pytest.raises(BadRequestError, match="invalid cursor"):
        runs.list(cursor="../../x")
    with pytest.raises(BadRequestError, match="limit is 1 to"):
        runs.list(limit=0)


def test_filters_by_group_prefix_phase_and_result(state: State) -> None:
    created = make_runs(state, ["/project/p1/branch/main", "/project/p10/branch/main", "/project/p1/pr/3"])
    finish(state, created[0], RunResult.FAILED)
    runs = Runs(state)
    ids = lambda **filters: [run.id for run in runs.list(**filters).runs]  # noqa: E731
    assert ids(group_prefix="/project/p1/") == [created[2].id, created[0].id]  # not p10
    assert ids(group_prefix="/project/p1") == [run.id for run in reversed(created)]
    assert ids(phase=RunPhase.FINISHED) == [created[0].id]
    assert ids(phase=RunPhase.QUEUED) == [created[2].id, created[1].id]
    assert ids(result=RunResult.FAILED) == [created[0].id]
    assert ids(group_prefix="/project/p1/pr/", phase=RunPhase.FINISHED) == []


def test_a_long_group_is_matched_on_its_document(state: State) -> None:
    long = "/project/p1/branch/" + "b" * 300
    created = make_runs(state, [long, long + "x", "/project/p1/branch/c"])
    ids = [run.id for run in Runs(state).list(group_prefix=long + "x").runs]
    assert ids == [created[1].id]


def test_a_page_reads_only_its_runs(state: State) -> None:
    """A page of 50 out of 300 runs: one listing of the index, and one read per run."""
    make_runs(state, ["/project/p1/branch/main"] * 300)
    counting = CountingStorage(state.storage)
    page = Runs(State(counting)).list(limit=50)
    assert len(page.runs) == 50 and page.next
    assert counting.counts == {"list": 1, "read": 50}


def test_a_create_that_died_before_its_document_leaves_entries_that_go_after_the_grace(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghost = Run("run-ghost", "/project/p1/branch/main", "projects/p1", [], creation_time=NOW)
    state.index.add(ghost)  # and then the process died
    (real,) = make_runs(state, ["/project/p1/branch/main"])
    assert [run.id for run in Runs(state).list().runs] == [real.id]  # skipped
    scheduler = scheduler_of(state)
    scheduler.schedule_once()
    assert [entry.run_id for entry in state.index.active()] == sorted([ghost.id, real.id])  # within the grace
    monkeypatch.setattr(index, "GRACE", timedelta(0))
    monkeypatch.setattr("runstore.runservice.scheduler.GRACE", timedelta(0))
    scheduler.schedule_once()
    assert [entry.run_id for entry in state.index.active()] == [real.id]
    collected = Collector(state, Attempts(), Runs(state)).collect_once()
    assert collected.index_entries_removed == 1
    assert [Listed.of(key[len(LISTED) :]).run_id for key in state.storage.list_keys(LISTED)] == [real.id]  # type: ignore[union-attr]


def test_a_finish_that_died_before_dropping_the_active_entry_is_completed(state: State) -> None:
    (run,) = make_runs(state, ["/project/p1/branch/main"])
    state.runs.update(run.id, lambda current: attrs.evolve(current, phase=RunPhase.FINISHED))  # then died
    scheduler_of(state).schedule_once()
    assert state.index.active() == []


def test_a_store_from_before_the_index_is_entered_once(state: State) -> None:
    old = [
        Run(f"run-old-{i}", "/project/p1/branch/main", "projects/p1", [], phase=phase, creation_time=NOW)
        for i, phase in enumerate([RunPhase.FINISHED, RunPhase.RUNNING])
    ]
    for run in old:
        state.runs.put(run.id, run)
    scheduler = scheduler_of(state)
    scheduler.schedule_once()
    assert state.index.is_current()
    assert [entry.run_id for entry in state.index.active()] == []  # run-old-1 had no tasks: finished now
    assert {run.id for run in Runs(state).list().runs} == {"run-old-0", "run-old-1"}


# -- the cost of a pass ---------------------------------------------------------------


def finished_runs(state: State, count: int) -> None:
    """``count`` finished runs, as the runservice leaves them."""
    runs = Runs(state)
    for _ in range(count):
        finish(state, runs.create(ONE, "/project/p1/branch/main"))


def idle_pass_requests(state: State) -> dict[str, int]:
    counting = CountingStorage(state.storage)
    scheduler_of(State(counting)).schedule_once()
    return counting.counts


@pytest.mark.parametrize("active", [0, 3])
def test_a_pass_costs_nothing_per_finished_run(active: int) -> None:
    few, many = State(MemoryStorage()), State(MemoryStorage())
    finished_runs(many, 400)
    for state in (few, many):
        state.executors.put("ex1", _executor())
        make_runs(state, ["/project/p1/branch/main"] * active)
        scheduler_of(state).schedule_once()  # assigns what it can, builds the index
    assert idle_pass_requests(many) == idle_pass_requests(few)


def _executor() -> Executor:
    return Executor("ex1", "http://127.0.0.1:1", 1, last_status_time=datetime.now(UTC))


# -- deleting and restarting ------------------------------------------------------------


def _done_state() -> StepState:
    return StepState(ExecutorTaskPhase.SUCCESS, NOW, NOW, 0)


def test_a_restart_drops_the_tasks_whose_parent_could_not_be_shared(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(
        [
            TaskConfig("a", [Step(StepKind.RUN, command="x")]),
            TaskConfig("b", [Step(StepKind.RUN, command="x")], ["a"]),
        ]
    )
    run = Runs(state).create(config, "/project/p1/branch/main")
    for task in run.tasks:
        state.store.create_task(run.id, task.id)
        state.store.finish_task(task.id)
    fetched = attrs.evolve(
        run,
        phase=RunPhase.FINISHED,
        tasks=[
            attrs.evolve(
                task,
                status=TaskStatus.SUCCESS,
                registered=True,
                setup_log_fetch=FetchPhase.FINISHED,
                step_log_fetch=[FetchPhase.FINISHED],
                step_states=[_done_state()],
            )
            for task in run.tasks
        ],
    )
    state.runs.put(run.id, fetched)
    a, b = fetched.tasks
    original = state.store.add_run
    monkeypatch.setattr(
        state.store, "add_run", lambda run_id, task_id: task_id != a.id and original(run_id, task_id)
    )
    again = Runs(state).restart(run.id)
    assert [task.shared for task in again.tasks] == [False, False]
    assert not state.storage.exists(f"logs/{b.id}/runs/{again.id}")  # b's added marker was dropped
    assert state.storage.exists(f"logs/{b.id}/runs/{run.id}")


def test_deleting_a_run_drops_every_task_and_its_entries(state: State) -> None:
    config = RunConfig([TaskConfig(f"t{i}", [Step(StepKind.RUN, command="x")]) for i in range(40)])
    run = Runs(state).create(config, "/project/p1/branch/main")
    for task in run.tasks:
        state.store.create_task(run.id, task.id)
        state.store.write_log(task.id, 0, b"log")
    registered = attrs.evolve(run, tasks=[attrs.evolve(task, registered=True) for task in run.tasks])
    state.runs.put(run.id, registered)
    finish(state, registered)
    Runs(state).delete(run.id)
    assert list(state.storage.list_keys()) == []  # the tasks' data, the document, the entries


def test_pages_name_the_runs_of_their_entries() -> None:
    name = RunIndex.listed_name(Run("run-1", "/project/p 1/branch/ä", "projects/p1", [], creation_time=NOW))
    entry = Listed.of(name)
    assert entry is not None and entry.run_id == "run-1" and entry.created == NOW
    assert entry.may_match("/project/p 1/") and not entry.may_match("/project/p 2")
    assert Listed.of("x") is None and Listed.of("123.run~g") is None


def test_runs_are_listed_over_http_page_by_page() -> None:
    service = RunService(MemoryStorage()).start(loops=False)
    server = ServerThread(RunServiceApp(service)).start()
    client = RunServiceClient(server.url)
    try:
        created = [client.create_run(ONE, f"/project/p{i % 2}/branch/main") for i in range(7)]
        pages = []
        cursor = ""
        for _ in range(10):
            page = client.list_runs(group_prefix="/project/p1/", limit=2, cursor=cursor)
            pages.append([run.id for run in page.runs])
            cursor = page.next
            if not cursor:
                break
        assert pages == [[created[5].id, created[3].id], [created[1].id]]
        assert client.list_runs(phase=RunPhase.FINISHED).runs == []
        assert len(client.list_runs(phase=RunPhase.QUEUED, result=RunResult.UNKNOWN).runs) == 7
        for fields, message in [
            ({"phase": "flying"}, "phase is one of queued, running, finished, not 'flying'"),
            ({"limit": "-1"}, "limit is a number of runs, not '-1'"),
            ({"limit": "501"}, "limit is 1 to 500, not 501"),
            ({"cursor": "x"}, "invalid cursor 'x'"),
        ]:
            with pytest.raises(RemoteServiceError) as refused:
                client.http.request(RunServiceRoutes.list_runs, fields=fields)
            assert refused.value.status == 400 and message in refused.value.remote_message
    finally:
        client.close()
        server.stop()
        service.stop()
