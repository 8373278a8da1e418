"""The reaper: deletes the records of executors that stopped reporting and polling."""

from __future__ import annotations

import functools
import logging

from runstore.runservice.attempts import Attempts
from runstore.runservice.executors import Executors
from runstore.runservice.state import State

log = logging.getLogger(__name__)


class Reaper:
    """Deletes the record of every executor not heard of for longer than its timeout
    (:class:`Liveness`): from memory, a request only for each record deleted."""

    def __init__(self, state: State, attempts: Attempts, executors: Executors) -> None:
        self._state = state
        self._attempts = attempts
        self._executors = executors

    def reap_once(self) -> None:
        liveness = self._executors.liveness
        for executor in list(self._attempts.each(self._state.executors)):
            if not liveness.alive(executor.id):
                last = liveness.last_heard(executor.id)
                log.info("executor %s silent since %s", executor.id, last)
                forget = functools.partial(self._executors.forget, executor.id, last)
                self._attempts.attempt(f"reaping executor {executor.id}", forget)
