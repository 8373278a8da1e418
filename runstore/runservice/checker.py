"""The executor-task checker: fails the tasks whose executor is gone."""

from __future__ import annotations

import functools
import logging

from runstore.clock import now
from runstore.contract.errors import NotExistError
from runstore.contract.model import ExecutorTask
from runstore.runservice.attempts import Attempts
from runstore.runservice.executors import follow
from runstore.runservice.state import State

log = logging.getLogger(__name__)

GONE = "executor deleted"
"""The error of a task whose executor's record was deleted while it was unfinished."""


class ExecutorTaskChecker:
    """Fails every unfinished executor task whose executor has no record, with end times on
    it and on its running steps, and the run task follows."""

    def __init__(self, state: State, attempts: Attempts) -> None:
        self._state = state
        self._attempts = attempts

    def check_once(self) -> None:
        for executor_task in list(self._attempts.each(self._state.executor_tasks)):
            if not executor_task.phase.finished:
                check = functools.partial(self._check, executor_task)
                self._attempts.attempt(f"checking task {executor_task.id}", check)

    def _check(self, executor_task: ExecutorTask) -> None:
        if self._state.executors.exists(executor_task.executor_id):
            return
        ended = now()

        def fail(task: ExecutorTask) -> ExecutorTask | None:
            return None if task.phase.finished else task.failed(GONE, ended)

        try:
            failed = self._state.executor_tasks.update(executor_task.id, fail)
        except NotExistError:
            return
        assert failed is not None
        log.info("task %s failed: its executor %s is gone", failed.id, failed.executor_id)
        follow(self._state, failed)
