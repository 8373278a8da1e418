"""The reaper: deletes the records of executors that stopped reporting."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta

from runstore.clock import now
from runstore.runservice.attempts import Attempts
from runstore.runservice.executors import Executors
from runstore.runservice.state import State

log = logging.getLogger(__name__)


class Reaper:
    """Deletes the record of every executor silent for longer than ``executor_timeout``."""

    def __init__(
        self, state: State, attempts: Attempts, executors: Executors, executor_timeout: timedelta
    ) -> None:
        self._state = state
        self._attempts = attempts
        self._executors = executors
        self.executor_timeout = executor_timeout

    def reap_once(self) -> None:
        limit = now() - self.executor_timeout
        for executor in list(self._attempts.each(self._state.executors)):
            if executor.last_status_time is None or executor.last_status_time < limit:
                log.info("executor %s silent since %s", executor.id, executor.last_status_time)
                forget = functools.partial(self._executors.forget, executor.id, executor.last_status_time)
                self._attempts.attempt(f"reaping executor {executor.id}", forget)
