"""Executors as the runservice knows them: their records, their tasks, their reports."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs

from runstore.clock import now
from runstore.contract.errors import NotExistError
from runstore.contract.model import (
    AssignedTasks,
    Executor,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    Run,
    TaskStatus,
)
from runstore.runservice.absences import Absences
from runstore.runservice.attempts import Attempts
from runstore.runservice.changes import Changes
from runstore.runservice.liveness import Liveness
from runstore.runservice.reports import check_report, settle_report
from runstore.runservice.state import State
from runstore.runservice.tasks import allowed, find_task, replace_task

log = logging.getLogger(__name__)


MAX_WAIT = 25.0
"""Seconds a long poll waits at most (less if the executor timeout is short: a third of it)."""


class Executors:
    """The executor registry, and the status reports of executor tasks.

    An executor's record is written when it registers or changes its URL or task limit;
    its reports and long polls otherwise only tell :class:`Liveness` it is alive.
    Its assignment's version (:class:`Changes`) moves whenever a task is assigned to it,
    ended by the runservice, or deleted; ``wake`` wakes the loops.
    """

    def __init__(
        self,
        state: State,
        absences: Absences,
        attempts: Attempts,
        *,
        timeout: timedelta = timedelta(seconds=30),
        changes: Changes | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._state = state
        self._absences = absences
        self._attempts = attempts
        self.changes = changes or Changes()
        self.liveness = Liveness(timeout)
        self._wake = wake

    @property
    def max_wait(self) -> float:
        """Seconds a long poll waits at most: :data:`MAX_WAIT`, or a third of the executor
        timeout (a live executor polls again well before it counts as gone)."""
        return min(MAX_WAIT, self.liveness.timeout / timedelta(seconds=3))

    async def poll(self, executor_id: str, after: str, wait: float) -> AssignedTasks:
        """The tasks assigned to a registered executor and their version; if that version is
        ``after``, once it changes or ``wait`` seconds (at most :attr:`max_wait`) passed,
        holding no thread meanwhile. Memory alone answers it: no store request."""
        self._check_registered(executor_id)
        self.liveness.heard(executor_id)
        if after and wait > 0:
            await self.changes.wait(executor_id, after, min(wait, self.max_wait))
        version = self.changes.version(executor_id)
        return AssignedTasks(version, self.tasks_of(executor_id))

    def get(self, executor_id: str) -> Executor | None:
        """The executor's record; None if it has none."""
        try:
            return self._state.executors.get(executor_id)
        except NotExistError:
            return None

    def report(self, executor_id: str, status: ExecutorStatus) -> Executor:
        """Register an executor, or refresh what it reports (a write only if its record is new
        or its URL or task limit changed)."""
        self.liveness.heard(executor_id)
        self._absences.returned(executor_id)  # back: the fetcher fetches from it again
        executor = Executor.reported(executor_id, status, now())
        known = self.get(executor_id)
        if known is None or (known.listen_url, known.active_tasks_limit) != (
            status.listen_url,
            status.active_tasks_limit,
        ):
            self._state.executors.put(executor_id, executor)
            log.info(
                "executor %s registered at %s, %d task(s) at once",
                executor_id,
                status.listen_url,
                status.active_tasks_limit,
            )
            self._wake()
        return executor

    def _check_registered(self, executor_id: str) -> None:
        if not self._state.executors.exists(executor_id):
            raise NotExistError(f"executor {executor_id!r} is not registered")

    def tasks_of(self, executor_id: str) -> list[ExecutorTask]:
        """The executor tasks assigned to a registered executor."""
        self._check_registered(executor_id)
        return self.assigned(executor_id)

    def assigned(self, executor_id: str) -> list[ExecutorTask]:
        """The executor tasks assigned to an executor (registered or not)."""
        tasks = self._attempts.each(self._state.executor_tasks)
        return [task for task in tasks if task.executor_id == executor_id]

    def delete(self, executor_id: str) -> None:
        """Delete an executor's record only; its tasks are the checker's and the fetcher's business."""
        self.forget(executor_id, self.liveness.last_heard(executor_id))

    def forget(self, executor_id: str, last_seen: datetime | None) -> None:
        """Delete an executor's record, last heard of at ``last_seen``."""
        self._absences.left(executor_id, last_seen)
        self._state.executors.delete(executor_id)
        self.liveness.forget(executor_id)
        log.info("executor %s deleted", executor_id)
        self._wake()

    def task_status(self, task_id: str, status: ExecutorTaskStatus) -> None:
        """Apply what an executor reports of a task; ``BadRequestError`` if it does not fit.

        A report that moves the task's phase is written at once; one that only tells of its
        steps is kept in memory until then (the executor reports again, to a runservice
        that took over, while what it is told of the task differs from what it runs).

        A report must fit the task's steps (:func:`check_report`). A final phase settles
        an unfinished task whatever reports were lost before it, with the times it lacks
        filled in (:func:`settle_report`); a finished task changes no more; any other
        change its phase does not allow is ignored and logged.
        """
        received = now()

        def change(task: ExecutorTask) -> ExecutorTask | None:
            check_report(task, status)
            moves = status.phase is not task.phase
            if task.phase.finished or (moves and not allowed(task.phase, status.phase)):
                if moves:
                    log.warning(
                        "executor task %s: %s -> %s ignored", task.id, task.phase.value, status.phase.value
                    )
                return None
            return task.with_status(settle_report(task, status, received))

        durable = self._state.executor_tasks.get(task_id).phase is not status.phase
        task = self._state.executor_tasks.update(task_id, change, durable=durable)
        assert task is not None
        follow(self._state, task)
        self._wake()


def follow(state: State, executor_task: ExecutorTask) -> None:
    """Make the run task follow its executor task, where the transition is allowed.

    In memory only: the executor task is the record, and the run is written with the
    task's next durable change (its fetch); a runservice that takes over follows every
    executor task again (:meth:`RunService.load`).
    """

    def change(run: Run) -> Run | None:
        task = find_task(run, executor_task.id)
        if task is None:
            return None
        target = TaskStatus(executor_task.phase.value)
        if task.status is not target and (
            task.status.finished or not allowed(ExecutorTaskPhase(task.status.value), executor_task.phase)
        ):
            log.warning("task %s: %s -> %s ignored", task.id, task.status.value, target.value)
            return None
        updated = attrs.evolve(
            task,
            status=target,
            start_time=executor_task.start_time or task.start_time,
            end_time=executor_task.end_time,
            step_states=executor_task.step_states or task.step_states,
            error=executor_task.error,
        )
        return replace_task(run, updated)

    try:
        state.runs.update(executor_task.run_id, change, durable=False)
    except NotExistError:
        log.warning("executor task %s belongs to a deleted run", executor_task.id)
