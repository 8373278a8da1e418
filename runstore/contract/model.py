"""The documents of the run service: runs, run tasks, executors and executor tasks.

Every class here is a frozen attrs value; documents change by replacing them
(``attrs.evolve``) and are stored as JSON (see :mod:`runstore.contract.codec`).
"""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from runstore.cache_groups import CacheGroup


def _check_cache_group(_instance: object, _attribute: object, path: str) -> None:
    """Refuse what ``CacheGroup`` refuses (``InvalidIdError``)."""
    CacheGroup(path)


class StepKind(enum.Enum):
    """What a step does."""

    RUN = "run"  # run a shell command in the workspace
    SAVE_TO_WORKSPACE = "save_to_workspace"  # tar paths of the workspace: one archive per step
    RESTORE_WORKSPACE = "restore_workspace"  # extract the archives of the parent tasks
    SAVE_CACHE = "save_cache"  # tar paths of the workspace as the cache ``key``
    RESTORE_CACHE = "restore_cache"  # extract the first cache matching ``keys``


@attrs.frozen
class Step:
    """One step of a task, as the run config gives it."""

    kind: StepKind
    name: str = ""
    command: str = ""  # RUN
    paths: list[str] = attrs.field(factory=list)  # SAVE_TO_WORKSPACE, SAVE_CACHE
    keys: list[str] = attrs.field(factory=list)  # SAVE_CACHE (the first), RESTORE_CACHE


@attrs.frozen
class TaskConfig:
    """A task of a run config: its steps, the tasks it depends on, its environment."""

    name: str
    steps: list[Step]
    depends: list[str] = attrs.field(factory=list)
    environment: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class RunConfig:
    """What a run is made of."""

    tasks: list[TaskConfig]


class RunPhase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class RunResult(enum.Enum):
    UNKNOWN = "unknown"
    SUCCESS = "success"
    FAILED = "failed"
    STOPPED = "stopped"  # cancelled before it finished


class TaskStatus(enum.Enum):
    NOTSTARTED = "notstarted"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"  # its run was cancelled before it started

    @property
    def finished(self) -> bool:
        return self not in (TaskStatus.NOTSTARTED, TaskStatus.RUNNING)


class ExecutorTaskPhase(enum.Enum):
    NOTSTARTED = "notstarted"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self not in (ExecutorTaskPhase.NOTSTARTED, ExecutorTaskPhase.RUNNING)


class FetchPhase(enum.Enum):
    NOTSTARTED = "notstarted"
    FINISHED = "finished"
    UNAVAILABLE = "unavailable"  # the executor was gone


@attrs.frozen
class StepState:
    """How a step went: its phase, start and end times, and exit code (RUN steps)."""

    phase: ExecutorTaskPhase = ExecutorTaskPhase.NOTSTARTED
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None


@attrs.frozen
class RunTask:
    """A task of a run. ``id`` names its data in the ``RunStore``; a shared task keeps the id."""

    id: str
    name: str
    steps: list[Step]
    depends: list[str] = attrs.field(factory=list)
    environment: dict[str, str] = attrs.field(factory=dict)
    status: TaskStatus = TaskStatus.NOTSTARTED
    start_time: datetime | None = None
    end_time: datetime | None = None
    step_states: list[StepState] = attrs.field(factory=list)
    error: str = ""
    registered: bool = False  # the run references the task's data in the RunStore
    shared: bool = False  # reused from the run this one restarts
    setup_log_fetch: FetchPhase = FetchPhase.NOTSTARTED
    step_log_fetch: list[FetchPhase] = attrs.field(factory=list)
    archive_fetch: dict[str, FetchPhase] = attrs.field(factory=dict)  # step index -> phase

    @property
    def fetched(self) -> bool:
        """Whether every log and archive of the task was fetched (or cannot be)."""
        phases = [self.setup_log_fetch, *self.step_log_fetch, *self.archive_fetch.values()]
        return all(phase is not FetchPhase.NOTSTARTED for phase in phases)


@attrs.frozen
class Run:
    """A run: its tasks (in config order), phase and result.

    ``group`` is ``/project/<id>/branch/<name>``, ``/project/<id>/pr/<n>`` or
    ``/user/<id>/branch/<name>`` (a branch name may contain "/"); ``cache_group`` is the
    path of a valid ``CacheGroup``.
    """

    id: str
    group: str
    cache_group: str = attrs.field(validator=_check_cache_group)  # a CacheGroup path
    tasks: list[RunTask]
    phase: RunPhase = RunPhase.QUEUED
    result: RunResult = RunResult.UNKNOWN
    creation_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    restarted_from: str = ""
    cancelled: bool = False  # a user cancelled it: no task starts any more
    deleting: bool = False  # its references are being dropped: its data may be gone

    def task(self, name: str) -> RunTask:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


@attrs.frozen
class Executor:
    """An executor as it last reported itself."""

    id: str
    listen_url: str
    active_tasks_limit: int
    active_tasks: list[str] = attrs.field(factory=list)
    last_status_time: datetime | None = None

    @classmethod
    def reported(cls, executor_id: str, status: ExecutorStatus, time: datetime) -> Executor:
        """The executor as ``status``, received at ``time``, describes it."""
        return cls(executor_id, status.listen_url, status.active_tasks_limit, status.active_tasks, time)


@attrs.frozen
class ArchiveRef:
    """A workspace archive to restore: the task that saved it and the step."""

    task_id: str
    step: int


@attrs.frozen
class ExecutorTask:
    """A run task handed to an executor; ``id`` is the run task's id (at most one each)."""

    id: str
    run_id: str
    executor_id: str
    task_name: str
    steps: list[Step]
    environment: dict[str, str] = attrs.field(factory=dict)
    cache_group: str = ""
    workspace: list[ArchiveRef] = attrs.field(factory=list)  # for RESTORE_WORKSPACE, in order
    phase: ExecutorTaskPhase = ExecutorTaskPhase.NOTSTARTED
    start_time: datetime | None = None
    end_time: datetime | None = None
    step_states: list[StepState] = attrs.field(factory=list)
    error: str = ""

    def failed(self, error: str, end_time: datetime) -> ExecutorTask:
        """This task failed at ``end_time`` with ``error``; its running steps fail then too."""
        states = [
            attrs.evolve(state, phase=ExecutorTaskPhase.FAILED, end_time=end_time)
            if state.phase is ExecutorTaskPhase.RUNNING
            else state
            for state in self.step_states
        ]
        return attrs.evolve(
            self, phase=ExecutorTaskPhase.FAILED, end_time=end_time, step_states=states, error=error
        )

    def with_status(self, status: ExecutorTaskStatus) -> ExecutorTask:
        """This task as its executor reports it."""
        return attrs.evolve(
            self,
            phase=status.phase,
            start_time=status.start_time,
            end_time=status.end_time,
            step_states=status.step_states,
            error=status.error,
        )


@attrs.frozen
class AssignedTasks:
    """The tasks assigned to an executor, and the version of that assignment: an executor
    that asks again with ``after=version`` is answered once the assignment changes (a task
    assigned, ended by the runservice, or gone) or a bound passes."""

    version: str
    tasks: list[ExecutorTask] = attrs.field(factory=list)


@attrs.frozen
class ExecutorTaskStatus:
    """What an executor reports of one of its tasks."""

    phase: ExecutorTaskPhase
    start_time: datetime | None = None
    end_time: datetime | None = None
    step_states: list[StepState] = attrs.field(factory=list)
    error: str = ""


@attrs.frozen
class ExecutorStatus:
    """What an executor reports of itself."""

    listen_url: str
    active_tasks_limit: int
    active_tasks: list[str] = attrs.field(factory=list)


@attrs.frozen
class CacheSaved:
    """The answer to a cache upload: whether it saved the cache (the first upload of a key wins)."""

    saved: bool


@attrs.frozen
class CacheInfo:
    """A cache of a cache group: its key, its size in bytes, and when it was saved."""

    key: str
    size: int
    created: datetime


@attrs.frozen
class CacheGroupCaches:
    """A cache group (its ``CacheGroup`` path) and its caches, in key order."""

    group: str
    caches: list[CacheInfo] = attrs.field(factory=list)


@attrs.frozen
class CachesDeleted:
    """The answer to deleting caches: the group, and the keys of the caches that went."""

    group: str
    keys: list[str] = attrs.field(factory=list)


@attrs.frozen
class CollectionReport:
    """What a pass of the collector removed."""

    runs_deleted: int = 0
    markers_removed: int = 0
    areas_deleted: int = 0
    caches_expired: int = 0
    index_entries_removed: int = 0


@attrs.frozen
class RunPage:
    """A page of runs, newest first; ``next`` is the cursor of the page after it ("" if none)."""

    runs: list[Run]
    next: str = ""


@attrs.frozen
class ServiceHealth:
    """What ``GET /healthz`` answers: whether the runservice holds its lease and reaches its store."""

    lease: bool
    store: bool

    @property
    def ok(self) -> bool:
        return self.lease and self.store
