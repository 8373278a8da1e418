"""The runservice's HTTP API (see docs/runservice.md)."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable
from typing import TypeVar

from objstore import NotExistError as ObjectMissing
from objstore import RemoteError
from runstore.cache_groups import CacheGroup, check_cache_key
from runstore.contract.auth import Tokens
from runstore.contract.errors import BadRequestError, ForbiddenError, NotExistError, UnavailableError
from runstore.contract.http.server import (
    JsonApp,
    Request,
    Response,
    ServerThread,
    StreamingResponse,
    file_response,
    identity,
    json_response,
    read_body,
    read_json,
)
from runstore.contract.model import (
    ArchiveRef,
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
TEXT = "text/plain; charset=utf-8"

MAX_UPLOAD = 1 << 30
"""The most bytes a cache upload may have, however it is sent (chunked or not)."""
MAX_WAIT = 30
"""The most seconds an executor's long poll for its tasks may wait."""


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


def _wait(value: str) -> float:
    """The seconds of a long poll's ``wait``; ``BadRequestError`` unless a number from 0 to MAX_WAIT."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT:  # nan too
        raise BadRequestError(f"wait is a number of seconds from 0 to {MAX_WAIT}, not {value!r}")
    return seconds


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

    async def put_executor(self, request: Request, executor_id: str) -> Response:
        executor_id = _id("executor id", executor_id)
        self._as(request, executor_id)
        status = await read_json(request, ExecutorStatus)
        if status.active_tasks_limit < 1:
            raise BadRequestError(f"active_tasks_limit is at least 1, not {status.active_tasks_limit}")
        return json_response(await asyncio.to_thread(self.service.executors.report, executor_id, status))

    def delete_executor(self, request: Request, executor_id: str) -> Response:
        self.service.executors.delete(_id("executor id", executor_id))
        return json_response({})

    async def executor_tasks(self, request: Request, executor_id: str) -> Response:
        """The executor's tasks and their version; with ``after`` (a version) and ``wait`` (0 to
        MAX_WAIT seconds), once the version is not ``after`` or ``wait`` passed, holding no thread."""
        executor_id = _id("executor id", executor_id)
        self._as(request, executor_id)
        after = request.query_params.get("after", "")
        wait = _wait(request.query_params.get("wait", "0"))
        return json_response(await self.service.executors.poll(executor_id, after, wait))

    async def task_status(self, request: Request, task_id: str) -> Response:
        """An executor's report of a task: 400, changing nothing, unless it fits the task's steps."""
        task_id = _id("task id", task_id)
        caller = identity(request)
        if caller is not None:
            task = await asyncio.to_thread(self.service.state.executor_tasks.get, task_id)
            if task.executor_id != caller.name:
                raise ForbiddenError(f"task {task_id!r} is not assigned to executor {caller.name!r}")
        status = await read_json(request, ExecutorTaskStatus)
        await asyncio.to_thread(self.service.executors.task_status, task_id, status)
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
        return file_response(stream, "application/x-tar")

    def _caches(self, request: Request) -> tuple[CacheGroup, list[str]]:
        """The cache group and keys a cache request names, checked."""
        group = request.query_params.get("group", "")
        keys = request.query_params.getlist("key")
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
        return file_response(found.stream, "application/x-tar", headers={"X-Cache-Key": found.key})

    async def save_cache(self, request: Request) -> Response:
        """A cache, spooled to a temporary file as it arrives (once the caller passed), then saved."""
        group, keys = await asyncio.to_thread(self._caches, request)
        file = await read_body(request, self.max_upload, "a cache").spool()
        try:
            saved = await asyncio.to_thread(self.service.state.store.caches(group).save, keys[0], file)
        finally:
            await asyncio.to_thread(file.close)
        return json_response(CacheSaved(saved))

    # -- users -------------------------------------------------------------------------

    async def create_run(self, request: Request) -> Response:
        args = request.query_params
        config = await read_json(request, RunConfig)
        run = await asyncio.to_thread(
            self.service.runs.create,
            config,
            args.get("group", ""),
            repo_uuid=args.get("repo_uuid", ""),
            cache_group=args.get("cache_group"),
        )
        return json_response(run, status=201)

    def list_runs(self, request: Request) -> Response:
        """A page of runs, newest first: ``group`` (a prefix), ``phase``, ``result``,
        ``limit`` and ``cursor`` (a page's ``next``)."""
        args = request.query_params
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
        start = request.query_params.get("start", "0")
        if not start.isdigit():
            raise BadRequestError(f"start is a byte offset, not {start!r}")
        follow = request.query_params.get("follow", "false")
        if follow not in ("true", "false"):
            raise BadRequestError(f"follow is true or false, not {follow!r}")
        logs = self.service.logs
        if follow == "true":
            return StreamingResponse(logs.follow(run.id, task, number, int(start)), media_type=TEXT)
        return file_response(logs.read(task, number, int(start)), TEXT)

    # -- upkeep --------------------------------------------------------------------------

    def collect(self, request: Request) -> Response:
        """One pass of the collector, now (after the one under way, if any); what it removed."""
        return json_response(self.service.collector.collect_once())

    def list_caches(self, request: Request) -> Response:
        """The caches of ``group`` (a ``CacheGroup`` path), or of every group without it."""
        store = self.service.state.store
        path = request.query_params.get("group")
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
        path = request.query_params.get("group")
        if path is None:
            raise BadRequestError("deleting caches names their group")
        group = _cache_group(path)
        keys = request.query_params.getlist("key")
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
