"""The scheduler: advances unfinished runs and hands runnable tasks to executors."""

from __future__ import annotations

import functools
import logging
from datetime import datetime

import attrs

from objstore import AlreadyExistsError
from runstore.clock import now
from runstore.contract.errors import NotExistError
from runstore.contract.model import (
    ExecutorTask,
    Run,
    RunPhase,
    RunResult,
    RunTask,
    StepState,
    TaskStatus,
)
from runstore.runservice.attempts import Attempts
from runstore.runservice.executors import Executors, follow
from runstore.runservice.index import GRACE
from runstore.runservice.runs import cancelled
from runstore.runservice.state import State
from runstore.runservice.tasks import workspace_of

log = logging.getLogger(__name__)

_BLOCKING = (TaskStatus.FAILED, TaskStatus.SKIPPED)
CANCELLED = "cancelled"
"""The error of an executor task stopped because its run was cancelled."""


def _ready(parent: RunTask) -> bool:
    """Whether a task may start as far as ``parent`` goes: it succeeded and its workspace
    archives are in the run store (the task restores them from there)."""
    return parent.status is TaskStatus.SUCCESS and parent.fetched


@attrs.define
class _Pass:
    """What one scheduling pass knows of executors: their tasks, and the free slots of the live ones."""

    assigned: set[str]  # the ids of every executor task
    free: dict[str, int]  # live executor id -> free slots

    def choose(self) -> str | None:
        """The executor with the most free slots (ties: the greatest id), taking one of them;
        None if all are full."""
        best = max(
            ((slots, executor_id) for executor_id, slots in self.free.items() if slots > 0), default=None
        )
        if best is None:
            return None
        self.free[best[1]] -= 1
        return best[1]


class Scheduler:
    """Starts runs, skips the tasks a failure blocks, assigns runnable tasks to executors
    with free slots, and finishes runs whose tasks all finished and were fetched.

    A pass reads the unfinished runs only (the active index, :mod:`runstore.runservice.index`),
    the executors and their tasks once each: O(unfinished runs + executors + executor
    tasks) requests, whatever the number of finished runs.
    """

    def __init__(self, state: State, attempts: Attempts, executors: Executors) -> None:
        self._state = state
        self._attempts = attempts
        self._executors = executors
        self._indexed = False  # whether the store's runs are known to be in the index

    def schedule_once(self) -> None:
        """Advance every unfinished run."""
        state = self._state
        if not self._indexed and not state.index.is_current():
            count = state.index.rebuild(self._attempts.each(state.runs))
            log.info("the run index was built from %d run documents", count)
        self._indexed = True
        known = self._pass()
        for entry in state.index.active():
            advance = functools.partial(self._advance, entry.run_id, entry.written, known)
            self._attempts.attempt(f"advancing run {entry.run_id}", advance)

    def _pass(self) -> _Pass:
        tasks = list(self._attempts.each(self._state.executor_tasks))
        load: dict[str, int] = {}
        for task in tasks:
            load[task.executor_id] = load.get(task.executor_id, 0) + 1
        alive = self._executors.liveness.alive
        free = {
            executor.id: executor.active_tasks_limit - load.get(executor.id, 0)
            for executor in self._attempts.each(self._state.executors)
            if alive(executor.id)
        }
        return _Pass({task.id for task in tasks}, free)

    def _advance(self, run_id: str, entered: datetime, known: _Pass) -> None:
        def settle(run: Run) -> Run | None:
            if run.phase is RunPhase.FINISHED:
                return None
            if run.cancelled:
                return cancelled(run, now())
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

        try:
            run = self._state.runs.update(run_id, settle)
        except NotExistError:
            if now() - entered > GRACE:  # a create or a delete that crashed half-way
                self._state.index.finished(run_id)
                log.info("the active entry of run %s, which has no document, is removed", run_id)
            return
        assert run is not None
        if run.cancelled:
            self._stop_running(run, known)
        elif run.phase is not RunPhase.FINISHED:
            for task in run.tasks:
                if task.status is TaskStatus.NOTSTARTED and all(
                    _ready(run.task(name)) for name in task.depends
                ):
                    assign = functools.partial(self._assign, run, task, known)
                    self._attempts.attempt(f"assigning task {task.id}", assign)
        self._finish_if_done(run, known)

    def _stop_running(self, run: Run, known: _Pass) -> None:
        """Fail the unfinished executor tasks of a cancelled run: their executors stop them."""
        ended = now()

        def stop(current: ExecutorTask) -> ExecutorTask | None:
            return None if current.phase.finished else current.failed(CANCELLED, ended)

        for task in run.tasks:
            if task.id in known.assigned and not task.status.finished:
                stopped = self._state.executor_tasks.update(task.id, stop)
                if stopped is not None and stopped.end_time == ended:  # this pass stopped it
                    log.info("task %s of cancelled run %s: stopped on its executor", task.id, run.id)
                    follow(self._state, stopped)
                    self._executors.changes.bump(stopped.executor_id)

    def _assign(self, run: Run, task: RunTask, known: _Pass) -> None:
        if task.id in known.assigned:
            return
        executor_id = known.choose()
        if executor_id is None:
            return
        if not task.registered:
            # The run's markers come before any data. The task id is this runservice's own
            # (fresh_task), so creating them again after an attempt that did not record them is safe.
            self._state.store.create_task(run.id, task.id, fresh=True)
            self._state.change_task(run.id, task.id, lambda t: attrs.evolve(t, registered=True))
        executor_task = ExecutorTask(
            id=task.id,
            run_id=run.id,
            executor_id=executor_id,
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
        known.assigned.add(task.id)
        self._executors.changes.bump(executor_id)
        log.info("task %s (%s of run %s) assigned to executor %s", task.id, task.name, run.id, executor_id)

    def _finish_if_done(self, run: Run, known: _Pass) -> None:
        """Finish a run whose tasks all finished and have no executor task left, then drop
        its active entry. Only this pass creates executor tasks (the fetcher may delete some
        meanwhile), so a task the pass does not know of has none."""
        if any(task.id in known.assigned for task in run.tasks if not task.shared):
            return  # an executor task is still active (its data not fetched yet)
        if run.phase is not RunPhase.FINISHED and not all(task.status.finished for task in run.tasks):
            return

        def finish(current: Run) -> Run | None:
            if current.phase is RunPhase.FINISHED or not all(task.status.finished for task in current.tasks):
                return None
            failed = any(task.status is TaskStatus.FAILED for task in current.tasks)
            result = (
                RunResult.STOPPED if current.cancelled else RunResult.FAILED if failed else RunResult.SUCCESS
            )
            return attrs.evolve(current, phase=RunPhase.FINISHED, result=result, end_time=now())

        finished = self._state.runs.update(run.id, finish)
        if finished is not None and finished.phase is RunPhase.FINISHED:
            self._state.index.finished(run.id)
            self._state.runs.forget(run.id)
            if run.phase is not RunPhase.FINISHED:
                log.info("run %s finished: %s", finished.id, finished.result.value)
