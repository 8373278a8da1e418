"""Garbage collection and run retention: what a pass removes, what it never removes, and
runservices killed (SIGKILL) in the middle of their passes."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from objstore import MemoryStorage, NotExistError, PosixStorage, Storage
from objstore.delegating import DelegatingStorage, Request
from runstore.cache_groups import CacheGroup
from runstore.contract.model import (
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
from runstore.runservice.attempts import Attempts
from runstore.runservice.collector import Collector, Retention
from runstore.runservice.runs import Runs
from runstore.runservice.state import State
from runstore.store import RunStore
from tests.test_service_processes import Store, start_runservice

STEP = Step(StepKind.RUN, command="true")
DONE = StepState(ExecutorTaskPhase.SUCCESS, exit_code=0)


def finished_run(state: State, group: str, tasks: int, shared_from: Run | None = None) -> Run:
    """A finished run of ``tasks`` tasks whose logs are in the store, as the runservice leaves
    one; its first task is shared from ``shared_from`` where ``add_run`` allows it (as a
    restart shares it)."""
    config = RunConfig([TaskConfig(f"t{i}", [STEP]) for i in range(tasks)])
    run = Runs(state).create(config, group)
    done = []
    for number, task in enumerate(run.tasks):
        if number == 0 and shared_from is not None and state.store.add_run(run.id, shared_from.tasks[0].id):
            done.append(attrs.evolve(shared_from.tasks[0], shared=True))
            continue  # (a deleter killed half-way leaves a tombstone: the task runs anew, as in a restart)
        state.store.create_task(run.id, task.id)
        state.store.write_log(task.id, 0, f"log of {task.id}".encode())
        state.store.finish_task(task.id)
        done.append(
            attrs.evolve(
                task,
                status=TaskStatus.SUCCESS,
                registered=True,
                step_states=[DONE],
                setup_log_fetch=FetchPhase.FINISHED,
                step_log_fetch=[FetchPhase.FINISHED],
            )
        )
    finished = attrs.evolve(run, tasks=done, phase=RunPhase.FINISHED, result=RunResult.SUCCESS)
    state.runs.put(run.id, finished)
    state.index.finished(run.id)
    return finished


def referenced_data_intact(storage: Storage) -> int:
    """Check that every task whose data a run references has its log (a run being deleted
    references nothing); how many tasks."""
    state = State(storage)
    checked = 0
    for run_id in state.runs.ids():
        try:
            run = state.runs.get(run_id)
        except Exception:
            raise AssertionError(f"run {run_id} cannot be read") from None
        for task in [] if run.deleting else run.tasks:
            if not (task.registered or task.shared):
                continue  # not run yet: no data
            with state.store.open_log(task.id, 0) as log:
                assert log.read() == f"log of {task.id}".encode(), (run.id, task.id)
            checked += 1
    return checked


def collector(state: State, **options: object) -> Collector:
    return Collector(state, Attempts(), Runs(state), **options)  # type: ignore[arg-type]


def test_keep_last_keeps_the_newest_finished_runs_of_each_group_and_their_shared_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = State(MemoryStorage())
    chains: dict[str, list[Run]] = {}
    for group in ("/project/a/branch/main", "/project/b/pr/7"):
        previous = None
        for _ in range(4):
            previous = finished_run(state, group, 3, shared_from=previous)
            chains.setdefault(group, []).append(previous)
    running = Runs(state).create(RunConfig([TaskConfig("t", [STEP])]), "/project/a/branch/main")
    with caplog.at_level(logging.INFO, "runstore.runservice.collector"):
        report = collector(state, retention=Retention(keep_last=2)).collect_once()
    assert report.runs_deleted == 4
    kept = set(state.runs.ids())
    assert kept == {running.id} | {run.id for chain in chains.values() for run in chain[-2:]}
    assert referenced_data_intact(state.storage) == 2 * 2 * 3
    for chain in chains.values():
        for old in chain[:2]:
            for task in old.tasks[1:]:  # not shared with a kept run: gone
                with pytest.raises(NotExistError):
                    state.store.open_log(task.id, 0)
    assert "4 run(s) deleted" in caplog.text


def test_max_age_deletes_old_finished_runs_only() -> None:
    state = State(MemoryStorage())
    old = finished_run(state, "/project/a/branch/main", 1)
    time.sleep(0.05)
    young = finished_run(state, "/project/a/branch/main", 1)
    report = collector(state, retention=Retention(max_age=timedelta(seconds=0.03))).collect_once()
    assert report.runs_deleted == 1
    assert state.runs.ids() == [young.id]
    assert not state.storage.exists(f"runservice/runs/{old.id}.json")


@pytest.mark.parametrize(("max_age", "keep_last"), [(timedelta(0), None), (None, 0)])
def test_a_retention_policy_is_checked(max_age: timedelta | None, keep_last: int | None) -> None:
    with pytest.raises(ValueError, match="retention"):
        Retention(max_age=max_age, keep_last=keep_last)


def test_a_pass_expires_caches_of_every_group_and_collects_what_crashes_left() -> None:
    storage = MemoryStorage()
    state = State(storage)
    store = RunStore(storage)
    for group in ("projects/p1", "users/u1/repos/r1", "groups/shared"):
        assert store.caches(CacheGroup(group)).save("k", b"x")
    stale = "logs/task-gone/runs/run-that-never-was"  # a restart that died before its run
    storage.write(stale, b"")
    time.sleep(0.02)
    report = collector(state, grace=timedelta(seconds=0.01), cache_ttl=timedelta(seconds=0.01)).collect_once()
    assert report.caches_expired == 3
    assert (report.markers_removed, report.areas_deleted) == (1, 1)
    assert [key for key in storage.list_keys() if not key.startswith("runservice/")] == []


def test_young_leftovers_are_not_collected() -> None:
    storage = MemoryStorage()
    storage.write("logs/task-new/runs/run-being-created", b"")
    report = collector(State(storage), grace=timedelta(hours=1)).collect_once()
    assert (report.markers_removed, report.areas_deleted) == (0, 0)
    assert storage.exists("logs/task-new/runs/run-being-created")


class HeldAtFirstRequest(DelegatingStorage):
    """A store whose first request waits for ``release``; counts the requests made meanwhile."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.while_held = 0
        self._lock = threading.Lock()

    def _request(self, request: Request) -> None:
        with self._lock:
            first = not self.entered.is_set()
            self.entered.set()
            if not first and not self.release.is_set():
                self.while_held += 1
        if first:
            assert self.release.wait(30)


def test_one_pass_runs_at_a_time() -> None:
    """A second pass (a gc request while the collector's thread passes) waits for the first."""
    storage = HeldAtFirstRequest(MemoryStorage())
    passes = collector(State(storage))
    reports: list[object] = []
    threads = [threading.Thread(target=lambda: reports.append(passes.collect_once())) for _ in range(2)]
    threads[0].start()
    assert storage.entered.wait(30)
    threads[1].start()
    time.sleep(0.3)  # time for the second pass to make requests, were it not waiting
    assert storage.while_held == 0
    storage.release.set()
    for thread in threads:
        thread.join(30)
    assert len(reports) == 2 and storage.while_held == 0


# -- killed in the middle ---------------------------------------------------------------


@pytest.mark.slow
def test_runservices_killed_during_their_passes_never_lose_referenced_data(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path / "store"))
    state = State(storage)
    groups = [f"/project/p{number}/branch/main" for number in range(3)]
    newest: dict[str, Run] = {}
    for group in groups:
        previous = None
        for _ in range(8):
            previous = finished_run(state, group, 6, shared_from=previous)
        assert previous is not None
        newest[group] = previous
    store = Store(("--store", str(tmp_path / "store")), dict(os.environ), storage)
    options = ("--collect-every", "0.2", "--keep-last", "1", "--grace", "0.001", "--lease-ttl", "1.5")
    chance = random.Random(11)
    kills = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and kills < 8:
        service = start_runservice(store, *options)
        time.sleep(chance.uniform(0.2, 0.6))
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(timeout=10)
        service.stop()
        kills += 1
        referenced_data_intact(storage)  # after every kill, whatever it interrupted
        print("KILLED", len(state.runs.ids()))
        for group in groups:  # more for the next one to delete, sharing with the kept run
            for _ in range(5):
                newest[group] = finished_run(state, group, 6, shared_from=newest[group])
        time.sleep(1.6)  # the killed one's lease expires
    assert kills == 8
    service = start_runservice(store, *options)
    try:
        for _ in range(100):  # the next passes finish the work
            if sorted(state.runs.ids()) == sorted(run.id for run in newest.values()):
                break
            time.sleep(0.2)
    finally:
        service.stop()
    assert sorted(state.runs.ids()) == sorted(run.id for run in newest.values())
    assert referenced_data_intact(storage) == 3 * 6
    kept_tasks = {task.id for run in newest.values() for task in run.tasks}
    assert {key.split("/")[1] for key in storage.list_keys("logs/")} == kept_tasks


def test_a_delete_cut_short_is_finished_by_the_next_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    state = State(MemoryStorage())
    run = finished_run(state, "/project/a/branch/main", 4)

    def cut_short(run_id: str, task_ids: object, **options: object) -> None:
        raise OSError("the process died here")

    monkeypatch.setattr(state.store, "delete_run", cut_short)
    with pytest.raises(OSError):
        Runs(state).delete(run.id)
    assert state.runs.get(run.id).deleting  # says its data may be gone
    monkeypatch.undo()
    assert collector(state).collect_once().runs_deleted == 1
    assert state.runs.ids() == [] and list(state.storage.list_keys("logs/")) == []
    assert state.index.being_deleted() == []
