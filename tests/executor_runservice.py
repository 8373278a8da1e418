"""A stand-in for the runservice's API for executors (docs/runservice.md), for the executor's tests.

It is a real HTTP server (a :class:`JsonApp` in a :class:`ServerThread` on 127.0.0.1) that
keeps executors, executor tasks, status reports, workspace archives and caches in dicts,
and records what executors told it. Its task list is a long poll, as the runservice's: each
executor's assignment has a version (:class:`Changes`), bumped when a task is added or
removed or a status report changes one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runstore.clock import now
from runstore.contract.errors import BadRequestError, InternalError, NotExistError
from runstore.contract.http.server import (
    JsonApp,
    Request,
    Response,
    ServerThread,
    json_response,
    read_body,
    read_json,
)
from runstore.contract.model import (
    AssignedTasks,
    CacheSaved,
    Executor,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
)
from runstore.contract.routes import RunServiceRoutes
from runstore.errors import InvalidIdError
from runstore.ids import parse_step
from runstore.runservice.api import MAX_WAIT
from runstore.runservice.changes import Changes


class RunserviceStandIn(JsonApp):
    """The executor-facing half of the runservice, in memory."""

    table = RunServiceRoutes

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executors: dict[str, Executor] = {}
        self.executor_reports: list[ExecutorStatus] = []
        self.tasks: dict[str, ExecutorTask] = {}
        self.task_reports: list[tuple[str, ExecutorTaskStatus]] = []
        self.archives: dict[tuple[str, int], bytes] = {}
        self.caches: dict[str, dict[str, bytes]] = {}  # group -> key -> tar, oldest first
        self.max_running = 0  # the most tasks in phase running at once
        self.fail_task_reports = False  # answer status reports with 500
        self.rejected_reports = 0  # how many were
        self.changes = Changes()
        self.caught_up: dict[str, int] = {}  # executor id -> polls that had seen the latest version
        self._server = ServerThread(self)

    # -- for the tests

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> RunserviceStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def add_task(self, task: ExecutorTask) -> None:
        with self.lock:
            self.tasks[task.id] = task
        self.changes.bump(task.executor_id)

    def remove_task(self, task_id: str) -> None:
        with self.lock:
            task = self.tasks.pop(task_id)
        self.changes.bump(task.executor_id)

    def task(self, task_id: str) -> ExecutorTask:
        with self.lock:
            return self.tasks[task_id]

    def executor_report_count(self) -> int:
        with self.lock:
            return len(self.executor_reports)

    def wait_caught_up(self, executor_id: str, polls: int = 2, timeout: float = 10.0) -> None:
        """Return once the executor asked ``polls`` more times having handled its latest tasks
        (each time with the current version): it acted on what it was given, then waited."""
        with self.lock:
            target = self.caught_up.get(executor_id, 0) + polls
        deadline = time.monotonic() + timeout
        while self.caught_up.get(executor_id, 0) < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"executor {executor_id} did not catch up in {timeout}s")
            time.sleep(0.02)

    def wait_task(
        self, task_id: str, predicate: Callable[[ExecutorTask], bool], timeout: float = 10.0
    ) -> ExecutorTask:
        """The task once ``predicate`` holds for it; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if predicate(task):
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} did not get there in {timeout}s: {task}")
            time.sleep(0.02)

    def wait_finished(self, task_id: str, timeout: float = 10.0) -> ExecutorTask:
        return self.wait_task(task_id, lambda task: task.phase.finished, timeout)

    # -- the API

    async def put_executor(self, request: Request, executor_id: str) -> Response:
        status = await read_json(request, ExecutorStatus)
        executor = Executor.reported(executor_id, status, now())
        with self.lock:
            self.executors[executor_id] = executor
            self.executor_reports.append(status)
        return json_response(executor)

    def delete_executor(self, request: Request, executor_id: str) -> Response:
        with self.lock:
            self.executors.pop(executor_id, None)
        return json_response({})

    async def executor_tasks(self, request: Request, executor_id: str) -> Response:
        """The executor's tasks and their version; with ``after`` and ``wait``, a long poll."""
        self.tasks_of(executor_id)  # NotExistError if not registered
        after = request.query_params.get("after", "")
        wait = request.query_params.get("wait", "0")
        try:
            seconds = float(wait)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_WAIT:
            raise BadRequestError(f"wait is a number of seconds from 0 to {MAX_WAIT}, not {wait!r}")
        if after == self.changes.version(executor_id):
            with self.lock:
                self.caught_up[executor_id] = self.caught_up.get(executor_id, 0) + 1
        if after and seconds > 0:
            await self.changes.wait(executor_id, after, seconds)
        version = self.changes.version(executor_id)
        return json_response(AssignedTasks(version, self.tasks_of(executor_id)))

    def tasks_of(self, executor_id: str) -> list[ExecutorTask]:
        """The tasks of a registered executor; ``NotExistError`` if it is not registered."""
        with self.lock:
            if executor_id not in self.executors:
                raise NotExistError(f"executor {executor_id} is not registered")
            return [task for task in self.tasks.values() if task.executor_id == executor_id]

    async def task_status(self, request: Request, task_id: str) -> Response:
        status = await read_json(request, ExecutorTaskStatus)
        with self.lock:
            if self.fail_task_reports:
                self.rejected_reports += 1
                raise InternalError("status reports fail for now")
            task = self.tasks.get(task_id)
            if task is None:
                raise NotExistError(f"no executor task {task_id}")
            self.task_reports.append((task_id, status))
            if task.phase.finished:
                return json_response({})  # a finished task's status does not change: ignored
            changed = task.with_status(status)
            self.tasks[task_id] = changed
            running = sum(task.phase is ExecutorTaskPhase.RUNNING for task in self.tasks.values())
            self.max_running = max(self.max_running, running)
        if changed != task:
            self.changes.bump(task.executor_id)
        return json_response({})

    def archive(self, request: Request, task_id: str, step: str) -> Response:
        try:
            number = parse_step(step)  # the runservice's rule
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        with self.lock:
            data = self.archives.get((task_id, number))
        if data is None:
            raise NotExistError(f"no archive of step {step} of task {task_id}")
        return Response(data, media_type="application/x-tar")

    def restore_cache(self, request: Request) -> Response:
        group = _one(request, "group")
        keys = request.query_params.getlist("key")
        if not keys:
            raise BadRequestError("no key")
        with self.lock:
            caches = dict(self.caches.get(group, {}))
        for key in keys:
            found = key if key in caches else next((k for k in reversed(caches) if k.startswith(key)), None)
            if found is not None:
                return Response(caches[found], media_type="application/x-tar", headers={"X-Cache-Key": found})
        raise NotExistError(f"no cache of group {group} matches {keys}")

    async def save_cache(self, request: Request) -> Response:
        group = _one(request, "group")
        key = _one(request, "key")
        data = await read_body(request, 1 << 30, "a cache").read()
        with self.lock:
            caches = self.caches.setdefault(group, {})
            if key in caches:
                return json_response(CacheSaved(False))
            caches[key] = data
        return json_response(CacheSaved(True))

    def _users_only(self, request: Request, **values: str) -> Response:
        raise NotExistError("the stand-in serves the executors' half of the API only")

    create_run = list_runs = get_run = delete_run = restart_run = cancel_run = run_log = health = _users_only
    collect = list_caches = delete_caches = _users_only


def _one(request: Request, name: str) -> str:
    values = request.query_params.getlist(name)
    if len(values) != 1 or not values[0]:
        raise BadRequestError(f"one {name} is needed, not {values}")
    return values[0]
