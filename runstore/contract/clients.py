"""Typed clients of the runservice and of the executor: methods, not URLs.

Each builds its requests from its server's table in :mod:`runstore.contract.routes`;
an error answer raises a :class:`RemoteServiceError` of the kind the server sent, no
answer at all an ``UnreachableError`` (both ``ServiceError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import attrs

from runstore.contract.errors import ErrorKind, RemoteServiceError
from runstore.contract.http.client import Download, ServiceClient
from runstore.contract.model import (
    AssignedTasks,
    CacheGroupCaches,
    CacheSaved,
    CachesDeleted,
    CollectionReport,
    Executor,
    ExecutorStatus,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    Run,
    RunConfig,
    RunPage,
    RunPhase,
    RunResult,
    RunTask,
    ServiceHealth,
)
from runstore.contract.routes import ExecutorRoutes, RunServiceRoutes

_R = RunServiceRoutes
_E = ExecutorRoutes


@attrs.frozen
class FoundCache:
    """A cache a restore matched: its key, and its tar archive being received."""

    key: str
    stream: Download


class _Client:
    """A typed client over a :class:`ServiceClient` (``http``) to ``base_url``, presenting
    ``token`` (a client's or an executor's to the runservice, the runservice's to an executor)."""

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout: float = 30.0, connections: int = 8
    ) -> None:
        self.http = ServiceClient(base_url, token=token, timeout=timeout, connections=connections)

    @property
    def base_url(self) -> str:
        return self.http.base_url

    def close(self) -> None:
        self.http.close()


class RunServiceClient(_Client):
    """The runservice's API at ``base_url``: its executors' half, then its users' half."""

    # -- executors -------------------------------------------------------------------

    def put_executor(self, executor_id: str, status: ExecutorStatus) -> Executor:
        """Register an executor, or refresh its record; the record as the runservice keeps it."""
        return self.http.json(_R.put_executor, Executor, {"executor_id": executor_id}, value=status)

    def delete_executor(self, executor_id: str) -> None:
        """Delete an executor's record (its tasks stay until the runservice settles them)."""
        self.http.send(_R.delete_executor, {"executor_id": executor_id})

    def executor_tasks(self, executor_id: str, *, after: str = "", wait: float = 0.0) -> AssignedTasks:
        """The tasks assigned to an executor; if their version is still ``after``, answered once
        it changes or ``wait`` seconds passed (a long poll, bounded by the runservice too)."""
        fields = {"after": after, "wait": f"{wait:g}"} if after and wait > 0 else None
        values = {"executor_id": executor_id}
        return self.http.json(_R.executor_tasks, AssignedTasks, values, fields=fields, wait=wait)

    def task_status(self, task_id: str, status: ExecutorTaskStatus) -> None:
        """Report the status of an executor task."""
        self.http.send(_R.task_status, {"task_id": task_id}, value=status)

    def archive(self, task_id: str, step: int) -> Download:
        """The workspace archive that step ``step`` of task ``task_id`` saved."""
        return self.http.open(_R.archive, {"task_id": task_id, "step": step})

    def restore_cache(self, group: str, keys: list[str]) -> FoundCache | None:
        """The cache of ``group`` that the first of ``keys`` matches (exactly, then as the
        prefix of the newest); None if none does."""
        try:
            stream = self.http.open(_R.restore_cache, fields={"group": group, "key": keys})
        except RemoteServiceError as exc:
            if exc.kind is ErrorKind.NOT_EXIST:
                return None
            raise
        return FoundCache(stream.headers.get("X-Cache-Key", ""), stream)

    def save_cache(self, group: str, key: str, body: BinaryIO) -> bool:
        """Upload a cache as ``key`` of ``group``; whether it was saved (False: it existed)."""
        fields = {"group": group, "key": key}
        return self.http.json(_R.save_cache, CacheSaved, body=body, fields=fields).saved

    # -- users -----------------------------------------------------------------------

    def create_run(
        self, config: RunConfig, group: str, *, repo_uuid: str = "", cache_group: str | None = None
    ) -> Run:
        """A new queued run of ``config`` in ``group`` (see ``RunService.create_run``)."""
        fields: dict[str, Any] = {"group": group}
        if repo_uuid:
            fields["repo_uuid"] = repo_uuid
        if cache_group is not None:
            fields["cache_group"] = cache_group
        return self.http.json(_R.create_run, Run, value=config, fields=fields)

    def list_runs(
        self,
        *,
        group_prefix: str = "",
        phase: RunPhase | None = None,
        result: RunResult | None = None,
        limit: int | None = None,
        cursor: str = "",
    ) -> RunPage:
        """A page of runs, newest first (see ``Runs.list``); pass its ``next`` as ``cursor``."""
        fields = {
            name: value
            for name, value in (
                ("group", group_prefix),
                ("phase", phase.value if phase else ""),
                ("result", result.value if result else ""),
                ("limit", str(limit) if limit is not None else ""),
                ("cursor", cursor),
            )
            if value
        }
        return self.http.json(_R.list_runs, RunPage, fields=fields)

    def get_run(self, run_id: str) -> Run:
        return self.http.json(_R.get_run, Run, {"run_id": run_id})

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run (its tasks' data once no other run references it)."""
        self.http.send(_R.delete_run, {"run_id": run_id})

    def restart_run(self, run_id: str) -> Run:
        """A new run of a finished run's config that shares its successful tasks."""
        return self.http.json(_R.restart_run, Run, {"run_id": run_id})

    def cancel_run(self, run_id: str) -> Run:
        """Cancel an unfinished run (it finishes as ``stopped``); the run as it is now."""
        return self.http.json(_R.cancel_run, Run, {"run_id": run_id})

    def run_log(self, run_id: str, task_name: str, step: int | str, *, start: int = 0) -> Download:
        """The log of a step (or ``"setup"``) of a task of a run from byte ``start``, as far as
        it exists now (from its executor while the task runs)."""
        values = {"run_id": run_id, "task_name": task_name, "step": step}
        return self.http.open(_R.run_log, values, fields={"start": str(start)} if start else None)

    def follow_log(self, run_id: str, task_name: str, step: int | str, *, start: int = 0) -> Iterator[bytes]:
        """The log from byte ``start`` as it is written, until its step has ended and all of it
        came. Each answer streams for a while (the runservice ends one after a quiet spell);
        the next one goes on from where it stopped."""
        values = {"run_id": run_id, "task_name": task_name, "step": step}
        offset = start
        while True:
            fields = {"follow": "true", "start": str(offset)}
            with self.http.open(_R.run_log, values, fields=fields, deadline=False) as stream:
                while chunk := stream.read(1 << 16):
                    offset += len(chunk)
                    yield chunk
            if _log_done(self.get_run(run_id).task(task_name), step):
                return

    def collect(self) -> CollectionReport:
        """Run a pass of the runservice's collector now (after the one under way, if any);
        what it removed."""
        return self.http.json(_R.collect, CollectionReport)

    def list_caches(self, group: str | None = None) -> list[CacheGroupCaches]:
        """The caches of the cache group ``group`` (a ``CacheGroup`` path), or of every group."""
        fields = {"group": group} if group is not None else None
        return self.http.json(_R.list_caches, list[CacheGroupCaches], fields=fields)

    def delete_caches(self, group: str, keys: list[str] | None = None) -> CachesDeleted:
        """Delete the caches of ``keys`` of the cache group ``group`` (None or []: all of them)."""
        fields: dict[str, str | list[str]] = {"group": group}
        if keys:
            fields["key"] = keys
        return self.http.json(_R.delete_caches, CachesDeleted, fields=fields)

    def health(self) -> ServiceHealth:
        """The runservice's health if it holds its lease and reaches its store; else a
        ``RemoteServiceError`` of kind ``unavailable`` (503) saying which it lacks."""
        return self.http.json(_R.health, ServiceHealth)


class ExecutorClient(_Client):
    """An executor's API at ``base_url``: its tasks' logs and archives, for the runservice."""

    def log(self, task_id: str, step: int | str, *, start: int = 0) -> Download:
        """The log of a step (or ``"setup"``) of a task from byte ``start``, as far as it is written."""
        fields = {"start": str(start)} if start else None
        return self.http.open(_E.log, {"task_id": task_id, "step": step}, fields=fields)

    def archive(self, task_id: str, step: int) -> Download:
        """The workspace archive that step ``step`` of a task saved."""
        return self.http.open(_E.archive, {"task_id": task_id, "step": step})


def _log_done(task: RunTask, step: int | str) -> bool:
    """Whether the log ``step`` of a run task will grow no more."""
    if task.status.finished:
        return task.fetched or not task.registered
    if step == "setup":
        return any(state.phase is not ExecutorTaskPhase.NOTSTARTED for state in task.step_states)
    return isinstance(step, int) and step < len(task.step_states) and task.step_states[step].phase.finished
