"""The runservice's HTTP API (see docs/runservice.md)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TypeVar

from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from objstore import NotExistError as ObjectMissing
from objstore import RemoteError
from runstore.cache_groups import CacheGroup, check_cache_key
from runstore.contract.auth import Tokens
from runstore.contract.errors import BadRequestError, ForbiddenError, NotExistError, UnavailableError
from runstore.contract.http.server import JsonApp, ServerThread, identity, json_response, read_body, read_json
from runstore.contract.model import (
    ArchiveRef,
    AssignedTasks,
    CacheGroupCaches,
    CacheInfo,
    CacheSaved,
    CachesDeleted,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskStatus,
    RunConfig,
    RunPhase,
    RunResult,
)
from runstore.contract.routes import RunServiceRoutes
from runstore.errors import InvalidIdError
from runstore.ids import check_id, parse_log_step, parse_step
from runstore.runservice.runs import DEFAULT_PAGE
from runstore.runservice.service import RunService

log = logging.getLogger(__name__)

MAX_UPLOAD = 1 << 30
"""The most bytes a cache upload may have, however it is sent (chunked or not)."""


def _id(kind: str, value: str) -> str:
    try:
        return check_id(kind, value)
    except InvalidIdError as exc:
        raise BadRequestError(str(exc)) from exc


E = TypeVar("E", bound=enum.Enum)


def _choice(kind: type[E], name: str, value: str) -> E | None:
    """The member of ``kind`` that ``value`` names; None for ""; ``BadRequestError`` otherwise."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise BadRequestError(f"{name} is one of {choices}, not {value!r}") from None


def _cache_group(path: str) -> CacheGroup:
    try:
        return CacheGroup(path)
    except InvalidIdError as exc:
        raise BadRequestError(str(exc)) from exc


def _log_step(value: str, count: int) -> int | str:
    try:
        return parse_log_step(value, count)
    except InvalidIdError as exc:
        raise BadRequestError(f'{exc} (or "setup")') from exc


class RunServiceApp(JsonApp):
    """Routes requests to a :class:`RunService`; a storage failure answers 503 ``unavailable``."""

    unavailable_errors = (RemoteError,)
    table = RunServiceRoutes

    def __init__(
        self, service: RunService, *, max_upload: int | None = None, tokens: Tokens | None = None
    ) -> None:
        self.service = service
        self.max_upload = MAX_UPLOAD if max_upload is None else max_upload
        self.tokens = tokens

    # -- what an executor may do: act as itself, on what is assigned to it ------------------

    def _as(self, request: Request, executor_id: str) -> None:
        caller = identity(request)
        if caller is not None and caller.name != executor_id:
            raise ForbiddenError(f"executor {caller.name!r} cannot act as executor {executor_id!r}")

    def _check_assigned(self, request: Request, allowed: Callable[[ExecutorTask], bool], what: str) -> None:
        """``ForbiddenError`` unless a task assigned to the calling executor is ``allowed``."""
        caller = identity(request)
        if caller is not None and not any(map(allowed, self.service.executors.assigned(caller.name))):
            raise ForbiddenError(f"no task of executor {caller.name!r} {what}")

    # -- executors -------------------------------------------------------------------

    def put_executor(self, request: Request, executor_id: str) -> Response:
        executor_id = _id("executor id", executor_id)
        self._as(request, executor_id)
        status = read_json(request, ExecutorStatus)
        if status.active_tasks_limit < 1:
            raise BadRequestError(f"active_tasks_limit is at least 1, not {status.active_tasks_limit}")
        return json_response(self.service.executors.report(executor_id, status))

    def delete_executor(self, request: Request, executor_id: str) -> Response:
        self.service.executors.delete(_id("executor id", executor_id))
        return json_response({})

    def executor_tasks(self, request: Request, executor_id: str) -> Response:
        executor_id = _id("executor id", executor_id)
        self._as(request, executor_id)
        return json_response(AssignedTasks("", self.service.executors.tasks_of(executor_id)))

    def task_status(self, request: Request, task_id: str) -> Response:
        """An executor's report of a task: 400, changing nothing, unless it fits the task's steps."""
        task_id = _id("task id", task_id)
        status = read_json(request, ExecutorTaskStatus)
        caller = identity(request)
        if caller is not None and self.service.state.executor_tasks.get(task_id).executor_id != caller.name:
            raise ForbiddenError(f"task {task_id!r} is not assigned to executor {caller.name!r}")
        self.service.executors.task_status(task_id, status)
        return json_response({})

    def archive(self, request: Request, task_id: str, step: str) -> Response:
        try:
            number = parse_step(step)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        task_id = _id("task id", task_id)
        self._check_assigned(
            request,
            lambda task: ArchiveRef(task_id, number) in task.workspace,
            f"restores the archive of step {number} of task {task_id!r}",
        )
        try:
            stream = self.service.state.store.open_archive(task_id, number)
        except ObjectMissing as exc:
            raise NotExistError(f"task {task_id!r} has no archive of step {number}") from exc
        return Response(
            wrap_file(request.environ, stream), content_type="application/x-tar", direct_passthrough=True
        )

    def _caches(self, request: Request) -> tuple[CacheGroup, list[str]]:
        """The cache group and keys a cache request names, checked."""
        group = request.args.get("group", "")
        keys = request.args.getlist("key")
        if not group or not keys:
            raise BadRequestError("a cache request names its group and at least one key")
        try:
            checked = CacheGroup(group), [check_cache_key(key) for key in keys]
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        self._check_assigned(
            request, lambda task: task.cache_group == group, f"uses the caches of group {group!r}"
        )
        return checked

    def restore_cache(self, request: Request) -> Response:
        group, keys = self._caches(request)
        found = self.service.state.store.caches(group).restore(keys)
        if found is None:
            raise NotExistError(f"no cache matches {keys} in group {group.path!r}")
        response = Response(
            wrap_file(request.environ, found.stream),
            content_type="application/x-tar",
            direct_passthrough=True,
        )
        response.headers["X-Cache-Key"] = found.key
        return response

    def save_cache(self, request: Request) -> Response:
        group, keys = self._caches(request)
        body = read_body(request, self.max_upload, "a cache")
        try:
            saved = self.service.state.store.caches(group).save(keys[0], body)
        except Exception as exc:
            body.reraise(exc)  # the store may have wrapped the body's error (too large, malformed)
            raise
        return json_response(CacheSaved(saved))

    # -- users -------------------------------------------------------------------------

    def create_run(self, request: Request) -> Response:
        group = request.args.get("group", "")
        config = read_json(request, RunConfig)
        run = self.service.runs.create(
            config,
            group,
            repo_uuid=request.args.get("repo_uuid", ""),
            cache_group=request.args.get("cache_group"),
        )
        return json_response(run, status=201)

    def list_runs(self, request: Request) -> Response:
        """A page of runs, newest first: ``group`` (a prefix), ``phase``, ``result``,
        ``limit`` and ``cursor`` (a page's ``next``)."""
        args = request.args
        limit = args.get("limit", str(DEFAULT_PAGE))
        if not limit.isdigit():
            raise BadRequestError(f"limit is a number of runs, not {limit!r}")
        page = self.service.runs.list(
            group_prefix=args.get("group", ""),
            phase=_choice(RunPhase, "phase", args.get("phase", "")),
            result=_choice(RunResult, "result", args.get("result", "")),
            limit=int(limit),
            cursor=args.get("cursor", ""),
        )
        return json_response(page)

    def health(self, request: Request) -> Response:
        """200 with the health if the lease holds and the store answers, else 503 saying which fails."""
        health = self.service.health()
        if not health.ok:
            raise UnavailableError(f"lease held: {health.lease}, store reached: {health.store}")
        return json_response(health)

    def get_run(self, request: Request, run_id: str) -> Response:
        return json_response(self.service.runs.get(_id("run id", run_id)))

    def delete_run(self, request: Request, run_id: str) -> Response:
        self.service.runs.delete(_id("run id", run_id))
        return json_response({})

    def restart_run(self, request: Request, run_id: str) -> Response:
        return json_response(self.service.runs.restart(_id("run id", run_id)), status=201)

    def cancel_run(self, request: Request, run_id: str) -> Response:
        return json_response(self.service.runs.cancel(_id("run id", run_id)))

    def run_log(self, request: Request, run_id: str, task_name: str, step: str) -> Response:
        """A log from byte ``start`` (0): what exists so far; with ``follow=true``, streamed as
        it is written until its step ends."""
        run = self.service.runs.get(_id("run id", run_id))
        try:
            task = run.task(task_name)
        except KeyError:
            raise NotExistError(f"run {run_id!r} has no task {task_name!r}") from None
        number = _log_step(step, len(task.steps))
        start = request.args.get("start", "0")
        if not start.isdigit():
            raise BadRequestError(f"start is a byte offset, not {start!r}")
        follow = request.args.get("follow", "false")
        if follow not in ("true", "false"):
            raise BadRequestError(f"follow is true or false, not {follow!r}")
        logs = self.service.logs
        if follow == "true":
            chunks = logs.follow(run.id, task, number, int(start))
        else:
            chunks = logs.read(task, number, int(start))
        response = Response(chunks, content_type="text/plain; charset=utf-8", direct_passthrough=True)
        response.call_on_close(chunks.close)
        return response

    # -- upkeep --------------------------------------------------------------------------

    def collect(self, request: Request) -> Response:
        """One pass of the collector, now (after the one under way, if any); what it removed."""
        return json_response(self.service.collector.collect_once())

    def list_caches(self, request: Request) -> Response:
        """The caches of ``group`` (a ``CacheGroup`` path), or of every group without it."""
        store = self.service.state.store
        path = request.args.get("group")
        groups = store.cache_groups() if path is None else [_cache_group(path)]
        return json_response(
            [
                CacheGroupCaches(
                    group.path,
                    [CacheInfo(info.key, info.size, info.created) for info in store.caches(group).infos()],
                )
                for group in groups
            ]
        )

    def delete_caches(self, request: Request) -> Response:
        """Delete the caches of ``group`` that the ``key`` fields name (none: all of them)."""
        path = request.args.get("group")
        if path is None:
            raise BadRequestError("deleting caches names their group")
        group = _cache_group(path)
        keys = request.args.getlist("key")
        try:
            deleted = self.service.state.store.caches(group).delete_many(keys or None)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        log.info("deleted %d cache(s) of group %s", len(deleted), group.path)
        return json_response(CachesDeleted(group.path, deleted))


def serve(
    service: RunService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    wait_for_lease: bool = True,
    tokens: Tokens | None = None,
) -> ServerThread:
    """Start the runservice's loops and its HTTP API (accepting ``tokens``; None: every
    request, on a trusted network only); the server thread (``.url``)."""
    service.start(wait_for_lease=wait_for_lease)
    if tokens is None:
        log.warning("the runservice's API takes no tokens: it accepts every request")
    return ServerThread(RunServiceApp(service, tokens=tokens), host, port).start()
