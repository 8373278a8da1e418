"""The runservice: one facade over its units, owning the store's lease and the loop thread.

Its state is three kinds of documents in an objstore ``Storage`` (runs, executors,
executor tasks), changed by compare-and-swap (:class:`State`). One instance at a time
owns a store (:class:`Lease`). The units each do one job: :class:`Runs` and
:class:`Executors` serve the HTTP handlers, which run concurrently with the loops; the
loops, in one thread, are the :class:`Scheduler`, the :class:`ExecutorTaskChecker`, the
:class:`Fetcher` and the :class:`Reaper`. A loop handles each run, executor task or
executor on its own (:class:`Attempts`): a failure with one is logged, and the loop goes
on with the others.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from datetime import timedelta

from objstore import Storage
from runstore.contract.errors import ServiceError
from runstore.runservice.absences import Absences
from runstore.runservice.attempts import Attempts
from runstore.runservice.checker import ExecutorTaskChecker
from runstore.runservice.executors import Executors
from runstore.runservice.fetcher import Fetcher
from runstore.runservice.lease import Lease
from runstore.runservice.reaper import Reaper
from runstore.runservice.runs import Runs
from runstore.runservice.scheduler import Scheduler
from runstore.runservice.state import State

log = logging.getLogger(__name__)


class RunService:
    """The scheduler of a CI run service over one store."""

    def __init__(
        self,
        storage: Storage,
        *,
        executor_timeout: timedelta = timedelta(seconds=30),
        interval: float = 0.5,
        lease_ttl: timedelta = timedelta(seconds=15),
    ) -> None:
        self.state = State(storage)
        self.interval = interval
        attempts = Attempts()
        absences = Absences()
        self.runs = Runs(self.state)
        self.executors = Executors(self.state, absences, attempts)
        self.scheduler = Scheduler(self.state, attempts, executor_timeout)
        self.checker = ExecutorTaskChecker(self.state, attempts)
        self.fetcher = Fetcher(self.state, attempts, absences, executor_timeout)
        self.reaper = Reaper(self.state, attempts, self.executors, executor_timeout)
        self._attempts = attempts
        owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease = Lease(storage, owner, lease_ttl)
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None

    def run_once(self) -> None:
        """One pass of every loop; one that fails is logged, and the others still run.

        The scheduler runs first and last, so that a task fetched in the pass finishes its
        run, and the slot it freed is used, in the same pass.
        """
        for loop in (
            self.scheduler.schedule_once,
            self.checker.check_once,
            self.fetcher.fetch_once,
            self.reaper.reap_once,
            self.scheduler.schedule_once,
        ):
            self._attempts.attempt(f"the loop {loop.__qualname__}", loop)

    def start(self, *, wait_for_lease: bool = True) -> RunService:
        """Take the store's lease and run the loops in a thread."""
        self.lease.acquire(wait=wait_for_lease)
        self._stop.clear()
        self._loop = threading.Thread(target=self._run_loops, name="runservice-loops", daemon=True)
        self._loop.start()
        return self

    def _run_loops(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lease.renew()
            except ServiceError:
                log.error("the lease on the store was lost: stopping")
                self._stop.set()
                return
            self.run_once()

    def stop(self) -> None:
        """Stop the loops, give up the lease, close the connections to executors."""
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=30)
        self.lease.release()
        self.fetcher.close()
