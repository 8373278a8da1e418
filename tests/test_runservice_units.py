"""The runservice's units, each on its own over a ``State``; and no I/O inside a compare-and-swap change."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3

from objstore import MemoryStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import NotExistError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    Executor,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    FetchPhase,
    Run,
    RunConfig,
    RunPhase,
    Step,
    StepKind,
    StepState,
    TaskConfig,
    TaskStatus,
)
from runstore.executor.app import ExecutorApp
from runstore.executor.executor import Executor as ExecutorProcess
from runstore.runservice.absences import Absences
from runstore.runservice.api import serve
from runstore.runservice.attempts import Attempts
from runstore.runservice.checker import ExecutorTaskChecker
from runstore.runservice.executors import Executors
from runstore.runservice.fetcher import Fetcher
from runstore.runservice.reaper import Reaper
from runstore.runservice.runs import Runs
from runstore.runservice.scheduler import Scheduler
from runstore.runservice.service import RunService
from runstore.runservice.state import Documents, State
from tests.waiting import wait_for

T = TypeVar("T")
GROUP = "/project/p1/branch/main"
TIMEOUT = timedelta(seconds=30)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SAVE = Step(StepKind.SAVE_TO_WORKSPACE, paths=["out"])
BUILD = RunConfig(
    [
        TaskConfig("build", [Step(StepKind.RUN, command="make"), SAVE]),
        TaskConfig(
            "test", [Step(StepKind.RESTORE_WORKSPACE), Step(StepKind.RUN, command="check")], ["build"]
        ),
    ]
)


def scheduler_of(state: State) -> Scheduler:
    return Scheduler(state, Attempts(), Executors(state, Absences(), Attempts(), timeout=TIMEOUT))


@pytest.fixture
def state() -> State:
    return State(MemoryStorage())


def live_executor(
    state: State, executor_id: str = "ex1", url: str = "http://127.0.0.1:1", slots: int = 2
) -> None:
    state.executors.put(
        executor_id, Executor(executor_id, url, slots, last_status_time=datetime.now(UTC))
    )


def only_executor_task(state: State) -> ExecutorTask:
    (task_id,) = state.executor_tasks.ids()
    return state.executor_tasks.get(task_id)


def test_the_scheduler_alone_assigns_runnable_tasks_to_free_executors(state: State) -> None:
    scheduler = scheduler_of(state)
    run = Runs(state).create(BUILD, GROUP)
    scheduler.schedule_once()
    assert state.runs.get(run.id).phase is RunPhase.RUNNING
    assert state.executor_tasks.ids() == []  # no executor: nothing assigned
    live_executor(state)
    scheduler.schedule_once()
    task = only_executor_task(state)
    assert (task.task_name, task.executor_id, task.workspace) == ("build", "ex1", [])  # "test" waits
    assert state.runs.get(run.id).task("build").registered
    assert state.store.add_run("other", task.id) is False  # registered, not finished: nothing to share


def test_the_checker_alone_fails_tasks_whose_executor_is_gone(state: State) -> None:
    live_executor(state)
    Runs(state).create(BUILD, GROUP)
    scheduler_of(state).schedule_once()
    task = only_executor_task(state)
    checker = ExecutorTaskChecker(state, Attempts())
    checker.check_once()
    assert state.executor_tasks.get(task.id).phase is ExecutorTaskPhase.NOTSTARTED  # its executor exists
    state.executors.delete("ex1")
    checker.check_once()
    failed = state.executor_tasks.get(task.id)
    assert (failed.phase, failed.error) == (ExecutorTaskPhase.FAILED, "executor deleted")
    run_task = state.runs.get(task.run_id).task("build")
    assert (run_task.status, run_task.end_time) == (TaskStatus.FAILED, failed.end_time)


def test_the_reaper_alone_deletes_silent_executors_only(state: State) -> None:
    absences = Absences()
    executors = Executors(state, absences, Attempts(), timeout=TIMEOUT)
    executors.report("silent", ExecutorStatus("http://127.0.0.1:2", 1))
    later = time.monotonic() + 2 * TIMEOUT.total_seconds()
    executors.liveness.clock = lambda: later  # silent since, in memory: no record is written
    executors.report("fresh", ExecutorStatus("http://127.0.0.1:1", 1))
    Reaper(state, Attempts(), executors).reap_once()
    assert state.executors.ids() == ["fresh"]
    assert absences.gone_for_good("silent", TIMEOUT)  # last heard of past the timeout: not waited for


def test_the_fetcher_alone_copies_a_finished_task_from_an_executor_and_deletes_its_executor_task(
    state: State, tmp_path: Path
) -> None:
    server = ServerThread(ExecutorApp(tmp_path)).start()
    try:
        live_executor(state, url=server.url)
        run = Runs(state).create(BUILD, GROUP)
        scheduler_of(state).schedule_once()
        task = only_executor_task(state)
        root = tmp_path / task.id
        (root / "logs" / "steps").mkdir(parents=True)
        (root / "archives").mkdir()
        (root / "logs" / "setup.log").write_bytes(b"setup\n")
        (root / "logs" / "steps" / "0.log").write_bytes(b"made\n")
        (root / "logs" / "steps" / "1.log").write_bytes(b"saved\n")
        (root / "archives" / "1.tar").write_bytes(b"tar bytes")
        done = StepState(ExecutorTaskPhase.SUCCESS, NOW, NOW, 0)
        report = ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, NOW, NOW, [done, done])
        Executors(state, Absences(), Attempts()).task_status(task.id, report)
        Fetcher(state, Attempts(), Absences(), TIMEOUT).fetch_once()
        assert state.executor_tasks.ids() == []
        fetched = state.runs.get(run.id).task("build")
        assert (fetched.setup_log_fetch, fetched.step_log_fetch) == (
            FetchPhase.FINISHED,
            [FetchPhase.FINISHED] * 2,
        )
        assert fetched.archive_fetch == {"1": FetchPhase.FINISHED}
        with state.store.open_log(task.id, 0) as log, state.store.open_archive(task.id, 1) as archive:
            assert (log.read(), archive.read()) == (b"made\n", b"tar bytes")
    finally:
        server.stop()


def test_the_fetcher_waits_for_a_deleted_executor_until_it_is_gone_for_good(state: State) -> None:
    live_executor(state)
    Runs(state).create(BUILD, GROUP)
    scheduler_of(state).schedule_once()
    task = only_executor_task(state)
    Executors(state, Absences(), Attempts()).task_status(
        task.id, ExecutorTaskStatus(ExecutorTaskPhase.FAILED)
    )
    absences = Absences()
    absences.left("ex1", datetime.now(UTC))
    state.executors.delete("ex1")
    Fetcher(state, Attempts(), absences, TIMEOUT).fetch_once()
    assert state.executor_tasks.ids() == [task.id]  # it may come back with the files
    Fetcher(state, Attempts(), absences, timedelta(0)).fetch_once()
    assert state.executor_tasks.ids() == []
    assert state.runs.get(task.run_id).task("build").setup_log_fetch is FetchPhase.UNAVAILABLE


def test_attempts_log_a_failing_item_once_and_go_on(caplog: pytest.LogCaptureFixture) -> None:
    attempts = Attempts()
    done: list[int] = []

    def fail() -> None:
        raise NotExistError("gone")

    with caplog.at_level(logging.DEBUG, "runstore.runservice"):
        for _ in range(3):
            attempts.attempt("item a", fail)
            attempts.attempt("item b", lambda: done.append(1))
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage() for record in warnings] == ["item a failed: NotExistError: gone"]
    assert done == [1, 1, 1]


def test_absences_forget_only_executors_gone_past_the_timeout_that_hold_nothing() -> None:
    absences = Absences()
    long_ago = datetime.now(UTC) - 2 * TIMEOUT
    for executor_id in ("holding", "idle"):
        absences.left(executor_id, long_ago)
    absences.left("recent", None)
    absences.forget({"holding"}, TIMEOUT)
    assert absences.gone_for_good("holding", TIMEOUT)
    assert not absences.gone_for_good("recent", TIMEOUT)
    assert not absences.gone_for_good("idle", TIMEOUT)  # forgotten: counted from now again


# -- no I/O inside a compare-and-swap change -----------------------------------------------


class Changing(threading.local):
    """Whether this thread is inside a change function of ``Documents.update``."""

    active = False


class WatchedStorage(MemoryStorage):
    """A store that records each call made from inside a change function."""

    def __init__(self, changing: Changing) -> None:
        super().__init__()
        self.changing = changing
        self.violations: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and callable(value) and super().__getattribute__("changing").active:
            super().__getattribute__("violations").append(name)
        return value


def test_no_change_function_does_storage_or_http_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole pipeline (create, run, fetch, restart, delete) through a real executor: no
    change function passed to ``Documents.update`` touches the store or sends a request."""
    changing = Changing()
    requests: list[str] = []
    original_update = Documents.update
    original_urlopen = urllib3.PoolManager.urlopen

    def update(
        self: Documents[T], doc_id: str, change: Callable[[T], T | None], *, durable: bool = True
    ) -> T | None:
        def watched(document: T) -> T | None:
            changing.active = True
            try:
                return change(document)
            finally:
                changing.active = False

        return original_update(self, doc_id, watched, durable=durable)

    def urlopen(self: urllib3.PoolManager, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if changing.active:
            requests.append(f"{method} {url}")
        return original_urlopen(self, method, url, *args, **kwargs)

    monkeypatch.setattr(Documents, "update", update)
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", urlopen)
    storage = WatchedStorage(changing)
    service = RunService(storage, interval=0.05)
    server = serve(service)
    executor = ExecutorProcess(server.url, tmp_path / "executor", executor_id="ex1", interval=0.05).start()
    client = RunServiceClient(server.url)
    config = RunConfig(
        [
            TaskConfig("build", [Step(StepKind.RUN, command="mkdir out && echo x > out/x"), SAVE]),
            TaskConfig(
                "test", [Step(StepKind.RESTORE_WORKSPACE), Step(StepKind.RUN, command="cat out/x")], ["build"]
            ),
        ]
    )
    try:
        run = client.create_run(config, GROUP)

        def finished(run_id: str) -> Run | None:
            current = client.get_run(run_id)
            return current if current.phase is RunPhase.FINISHED else None

        assert wait_for("the run", lambda: finished(run.id)).result.value == "success"
        again = client.restart_run(run.id)
        wait_for("the restart", lambda: finished(again.id))
        client.delete_run(run.id)
        client.delete_run(again.id)
    finally:
        client.close()
        executor.stop()
        server.stop()
        service.stop()
    assert (storage.violations, requests) == ([], [])


def test_the_watch_sees_io_inside_a_change() -> None:
    """The check above can fail: a change that reads the store is seen."""
    changing = Changing()
    storage = WatchedStorage(changing)
    documents: Documents[Run] = State(storage).runs
    run = Runs(State(storage)).create(BUILD, GROUP)

    def reading(current: Run) -> Run | None:
        changing.active = True
        try:
            storage.exists("anything")
        finally:
            changing.active = False
        return None

    documents.update(run.id, reading)
    assert storage.violations[0] == "exists"


class TricklingExecutor:
    """A hostile executor's HTTP side on loopback: every answer promises 10,000 bytes and
    sends one every half second."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(1 << 16)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
                while not self._stop.wait(0.5):
                    connection.sendall(b"x")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        for thread in self._threads:
            thread.join(5)


def test_a_hostile_executor_delays_only_its_own_tasks(tmp_path: Path) -> None:
    """Its tasks' fetches trickle; another executor's run is fetched and finishes meanwhile."""
    hostile = TricklingExecutor()
    service = RunService(MemoryStorage(), interval=0.05)
    server = serve(service)
    client = RunServiceClient(server.url)
    good: ExecutorProcess | None = None
    try:
        client.put_executor("hostile", ExecutorStatus(hostile.url, 4))
        hello = RunConfig([TaskConfig("hello", [Step(StepKind.RUN, command="echo hello")])])
        theirs = [client.create_run(hello, GROUP) for _ in range(4)]

        def all_assigned() -> list[ExecutorTask] | None:
            assigned = client.executor_tasks("hostile").tasks
            return assigned if len(assigned) == 4 else None

        def finished() -> Run | None:
            run = client.get_run(ours.id)
            return run if run.phase is RunPhase.FINISHED else None

        tasks = wait_for("the hostile's tasks", all_assigned)
        done = StepState(ExecutorTaskPhase.SUCCESS, NOW, NOW, 0)
        for task in tasks:  # it says they succeeded: their logs are to be fetched from it
            client.task_status(task.id, ExecutorTaskStatus(ExecutorTaskPhase.SUCCESS, NOW, NOW, [done]))
        wait_for("the fetches from it", lambda: hostile.connections >= 2 or None)
        good = ExecutorProcess(server.url, tmp_path / "good", executor_id="good", interval=0.05).start()
        ours = client.create_run(hello, GROUP)
        done_run = wait_for("our run", finished, timeout=20)
        assert done_run.result.value == "success" and done_run.tasks[0].fetched
        assert hostile.connections == 2  # at most two fetches from one executor at once, still trickling
        assert all(client.get_run(run.id).phase is not RunPhase.FINISHED for run in theirs)
    finally:
        client.close()
        if good is not None:
            good.stop()
        hostile.close()
        server.stop()
        service.stop()
