"""Executors as the runservice knows them: their records, their tasks, their reports."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

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
from runstore.runservice.reports import check_report, settle_report
from runstore.runservice.state import State
from runstore.runservice.tasks import allowed, find_task, replace_task

log = logging.getLogger(__name__)


class Executors:
    """The executor registry, and the status reports of executor tasks."""

    def __init__(self, state: State, absences: Absences, attempts: Attempts, changes: Changes) -> None:
        self._state = state
        self._absences = absences
        self._attempts = attempts
        self.changes = changes

    async def poll(self, executor_id: str, after: str, wait: float) -> AssignedTasks:
        """The tasks assigned to a registered executor and their version; if that version is
        ``after``, once it changes or ``wait`` seconds passed (holding no thread meanwhile)."""
        await asyncio.to_thread(self.tasks_of, executor_id)  # NotExistError if not registered
        if after and wait > 0:
            await self.changes.wait(executor_id, after, wait)
        version = self.changes.version(executor_id)
        return AssignedTasks(version, await asyncio.to_thread(self.tasks_of, executor_id))

    def get(self, executor_id: str) -> Executor | None:
        """The executor's record; None if it has none."""
        try:
            return self._state.executors.get(executor_id)
        except NotExistError:
            return None

    def report(self, executor_id: str, status: ExecutorStatus) -> Executor:
        """Register an executor, or refresh what it reports."""
        executor = Executor.reported(executor_id, status, now())
        self._state.executors.put(executor_id, executor)
        self._absences.returned(executor_id)  # back: the fetcher fetches from it again
        return executor

    def tasks_of(self, executor_id: str) -> list[ExecutorTask]:
        """The executor tasks assigned to a registered executor."""
        if not self._state.executors.exists(executor_id):
            raise NotExistError(f"executor {executor_id!r} is not registered")
        return self.assigned(executor_id)

    def assigned(self, executor_id: str) -> list[ExecutorTask]:
        """The executor tasks assigned to an executor (registered or not)."""
        tasks = self._attempts.each(self._state.executor_tasks)
        return [task for task in tasks if task.executor_id == executor_id]

    def delete(self, executor_id: str) -> None:
        """Delete an executor's record only; its tasks are the checker's and the fetcher's business."""
        executor = self.get(executor_id)
        self.forget(executor_id, executor.last_status_time if executor is not None else None)

    def forget(self, executor_id: str, last_seen: datetime | None) -> None:
        """Delete an executor's record, last heard of at ``last_seen``."""
        self._absences.left(executor_id, last_seen)
        self._state.executors.delete(executor_id)
        log.info("executor %s deleted", executor_id)

    def task_status(self, task_id: str, status: ExecutorTaskStatus) -> None:
        """Apply what an executor reports of a task; ``BadRequestError`` if it does not fit.

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

        task = self._state.executor_tasks.update(task_id, change)
        assert task is not None
        follow(self._state, task)


def follow(state: State, executor_task: ExecutorTask) -> None:
    """Make the run task follow its executor task, where the transition is allowed."""

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
        state.runs.update(executor_task.run_id, change)
    except NotExistError:
        log.warning("executor task %s belongs to a deleted run", executor_task.id)
