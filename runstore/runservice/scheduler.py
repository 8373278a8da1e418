"""The scheduler: advances unfinished runs and hands runnable tasks to executors."""

from __future__ import annotations

import contextlib
import functools
import logging
from datetime import timedelta

import attrs

from objstore import AlreadyExistsError
from runstore.clock import now
from runstore.contract.model import (
    Executor,
    ExecutorTask,
    Run,
    RunPhase,
    RunResult,
    RunTask,
    StepState,
    TaskStatus,
)
from runstore.runservice.attempts import Attempts
from runstore.runservice.state import State
from runstore.runservice.tasks import workspace_of

log = logging.getLogger(__name__)

_BLOCKING = (TaskStatus.FAILED, TaskStatus.SKIPPED)


class Scheduler:
    """Starts runs, skips the tasks a failure blocks, assigns runnable tasks to executors
    with free slots, and finishes runs whose tasks all finished and were fetched."""

    def __init__(self, state: State, attempts: Attempts, executor_timeout: timedelta) -> None:
        self._state = state
        self._attempts = attempts
        self.executor_timeout = executor_timeout

    def schedule_once(self) -> None:
        """Advance every unfinished run."""
        for run in list(self._attempts.each(self._state.runs)):
            if run.phase is not RunPhase.FINISHED:
                self._attempts.attempt(f"advancing run {run.id}", functools.partial(self._advance, run.id))

    def _advance(self, run_id: str) -> None:
        def settle(run: Run) -> Run | None:
            tasks = []
            for task in run.tasks:
                if task.status is TaskStatus.NOTSTARTED:
                    parents = [run.task(name) for name in task.depends]
                    if any(p.status in _BLOCKING for p in parents):
                        task = attrs.evolve(task, status=TaskStatus.SKIPPED, end_time=now())
                tasks.append(task)
            run = attrs.evolve(run, tasks=tasks)
            if any(task.status is TaskStatus.FAILED for task in tasks):
                run = attrs.evolve(run, result=RunResult.FAILED)
            if run.phase is RunPhase.QUEUED:
                run = attrs.evolve(run, phase=RunPhase.RUNNING, start_time=now())
            return run

        run = self._state.runs.update(run_id, settle)
        assert run is not None
        for task in run.tasks:
            if task.status is TaskStatus.NOTSTARTED and all(
                run.task(name).status is TaskStatus.SUCCESS for name in task.depends
            ):
                self._attempts.attempt(
                    f"assigning task {task.id}", functools.partial(self._assign, run, task)
                )
        self._finish_if_done(run_id)

    def _assign(self, run: Run, task: RunTask) -> None:
        if self._state.executor_tasks.exists(task.id):
            return
        executor = self._choose_executor()
        if executor is None:
            return
        if not task.registered:
            # The run's marker comes before any data; AlreadyExistsError means an earlier
            # attempt registered the task but did not record it.
            with contextlib.suppress(AlreadyExistsError):
                self._state.store.create_task(run.id, task.id)
            self._state.change_task(run.id, task.id, lambda t: attrs.evolve(t, registered=True))
        executor_task = ExecutorTask(
            id=task.id,
            run_id=run.id,
            executor_id=executor.id,
            task_name=task.name,
            steps=task.steps,
            environment=task.environment,
            cache_group=run.cache_group,
            workspace=workspace_of(run, task),
            step_states=[StepState() for _ in task.steps],
        )
        try:
            self._state.executor_tasks.create(task.id, executor_task)
        except AlreadyExistsError:
            return
        log.info("task %s (%s of run %s) assigned to executor %s", task.id, task.name, run.id, executor.id)

    def _choose_executor(self) -> Executor | None:
        """The live executor with the most free slots (ties: the greatest id); None if all are full."""
        limit = now() - self.executor_timeout
        load: dict[str, int] = {}
        for executor_task in self._attempts.each(self._state.executor_tasks):
            load[executor_task.executor_id] = load.get(executor_task.executor_id, 0) + 1
        candidates = [
            (executor.active_tasks_limit - load.get(executor.id, 0), executor.id, executor)
            for executor in self._attempts.each(self._state.executors)
            if executor.last_status_time is not None and executor.last_status_time > limit
        ]
        free = [candidate for candidate in candidates if candidate[0] > 0]
        return max(free, key=lambda candidate: candidate[:2])[2] if free else None

    def _finish_if_done(self, run_id: str) -> None:
        # Executor tasks are created and deleted by the loops only (one thread): whether a
        # run has one can be read before the change.
        run = self._state.runs.get(run_id)
        active = any(self._state.executor_tasks.exists(task.id) for task in run.tasks if not task.shared)

        def finish(current: Run) -> Run | None:
            if current.phase is RunPhase.FINISHED or not all(task.status.finished for task in current.tasks):
                return None
            if active:
                return None  # an executor task is still active (its data not fetched yet)
            failed = any(task.status is TaskStatus.FAILED for task in current.tasks)
            return attrs.evolve(
                current,
                phase=RunPhase.FINISHED,
                result=RunResult.FAILED if failed else RunResult.SUCCESS,
                end_time=now(),
            )

        finished = self._state.runs.update(run_id, finish)
        if finished is not None and finished.phase is not run.phase and finished.phase is RunPhase.FINISHED:
            log.info("run %s finished: %s", finished.id, finished.result.value)
