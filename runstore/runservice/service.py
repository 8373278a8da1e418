"""The runservice: one facade over its units, owning the store's lease and the threads.

Its state is three kinds of documents in an objstore ``Storage`` (runs, executors,
executor tasks), changed by compare-and-swap (:class:`State`). One instance at a time
owns a store (:class:`Lease`), renewed by a thread of its own, and every change goes
through a :class:`FencedStorage` that refuses it unless the lease holds. Being the only
writer, the holder keeps the executors, the executor tasks and the unfinished runs in
memory, written through on change, and reads them from the store when it takes the
lease and in each sweep. The units each do one job: :class:`Runs` and :class:`Executors`
serve the HTTP handlers, which run concurrently with the loops; the loops, in one
thread, are the :class:`Scheduler`, the :class:`ExecutorTaskChecker`, the
:class:`Fetcher` (whose fetches run in its own pool) and the :class:`Reaper`. They run
when woken by what they are told and do (a run created, a report, a fetch done, an
executor come or gone), at least every ``interval`` (from memory: no request unless
something changed); the sweep reads the store again every ``sweep_interval``. The
:class:`Collector` runs in a thread of its own, every ``collect_interval``. A loop
handles each run, executor task or executor on its own (:class:`Attempts`): a failure
with one is logged, and the loop goes on with the others.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import threading
import time
from datetime import timedelta

from objstore import ObjstoreError, Storage
from runstore.contract.errors import ServiceError
from runstore.contract.model import ServiceHealth
from runstore.runservice.absences import Absences
from runstore.runservice.attempts import Attempts
from runstore.runservice.changes import Changes
from runstore.runservice.checker import ExecutorTaskChecker
from runstore.runservice.collector import NO_RETENTION, Collector, Retention
from runstore.runservice.executors import Executors, follow
from runstore.runservice.fence import FencedStorage
from runstore.runservice.fetcher import Fetcher
from runstore.runservice.lease import LEASE_KEY, Lease
from runstore.runservice.logs import Logs
from runstore.runservice.reaper import Reaper
from runstore.runservice.runs import Runs
from runstore.runservice.scheduler import Scheduler
from runstore.runservice.state import State
from runstore.store import DEFAULT_GRACE

log = logging.getLogger(__name__)


class RunService:
    """The scheduler of a CI run service over one store; ``runservice_token`` is the token it
    presents to executors (None: to executors that take none)."""

    def __init__(
        self,
        storage: Storage,
        *,
        executor_timeout: timedelta = timedelta(seconds=30),
        interval: float = 1.0,
        sweep_interval: timedelta = timedelta(seconds=300),
        lease_ttl: timedelta = timedelta(seconds=15),
        collect_interval: timedelta | None = None,
        grace: timedelta = DEFAULT_GRACE,
        cache_ttl: timedelta | None = None,
        retention: Retention = NO_RETENTION,
        runservice_token: str | None = None,
    ) -> None:
        owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease = Lease(storage, owner, lease_ttl)
        self.state = State(FencedStorage(storage, self.lease.check))
        self.interval = interval
        self.sweep_interval = sweep_interval
        self.collect_interval = collect_interval
        self._woken = threading.Event()
        attempts = Attempts()
        absences = Absences()
        self.changes = Changes()
        self.runs = Runs(self.state, self.wake)
        self.executors = Executors(
            self.state, absences, attempts, timeout=executor_timeout, changes=self.changes, wake=self.wake
        )
        self.scheduler = Scheduler(self.state, attempts, self.executors)
        self.checker = ExecutorTaskChecker(self.state, attempts)
        self.fetcher = Fetcher(
            self.state,
            attempts,
            absences,
            executor_timeout,
            token=runservice_token,
            changes=self.changes,
            wake=self.wake,
        )
        self.reaper = Reaper(self.state, attempts, self.executors)
        self.logs = Logs(self.state, self.fetcher)
        self.collector = Collector(
            self.state, attempts, self.runs, grace=grace, cache_ttl=cache_ttl, retention=retention
        )
        self._attempts = attempts
        self._storage = storage
        self._stop = threading.Event()
        self.lost = threading.Event()
        """Set once the lease was lost: the loops have stopped and every change is refused."""
        self._threads: list[threading.Thread] = []

    def wake(self) -> None:
        """Something happened: the loops run a pass now (or right after the one under way)."""
        self._woken.set()

    def load(self) -> None:
        """Read the store's state into memory (on taking the lease): every executor counts as
        heard of now, and every run task follows its executor task again."""
        self.state.load()
        self.executors.liveness.reset(self.state.executors.ids())
        for executor_task in self._attempts.each(self.state.executor_tasks):
            self._attempts.attempt(
                f"following task {executor_task.id}", functools.partial(follow, self.state, executor_task)
            )

    def sweep(self) -> None:
        """Read the store's state again, for what no event announces (documents written by
        other means, a change whose outcome was lost); a request per kind of document, and
        one or two per document changed."""
        self.state.load()

    def run_once(self) -> None:
        """One pass of every loop; one that fails is logged, and the others still run.

        The scheduler runs first and last, so that a task fetched in the pass finishes its
        run, and the slot it freed is used, in the same pass; fetches started here go on
        in the fetcher's pool (a slow executor holds up none of the loops).
        """
        for name, loop in (
            ("scheduler", self.scheduler.schedule_once),
            ("checker", self.checker.check_once),
            ("fetcher", functools.partial(self.fetcher.fetch_once, wait=False)),
            ("reaper", self.reaper.reap_once),
            ("scheduler", self.scheduler.schedule_once),
        ):
            self._attempts.attempt(f"the {name}'s pass", loop)

    def health(self) -> ServiceHealth:
        """Whether the lease holds, and whether the store answers (one request)."""
        try:
            self._storage.exists(LEASE_KEY)
            reached = True
        except ObjstoreError:
            reached = False
        return ServiceHealth(self.lease.holds(), reached)

    def start(self, *, wait_for_lease: bool = True, loops: bool = True) -> RunService:
        """Take the store's lease and renew it in a thread of its own; with ``loops``, run the
        loops and the collector (if ``collect_interval`` is set) in threads of their own too
        (without, the caller drives the units, as the tests do)."""
        self.lease.acquire(wait=wait_for_lease)
        self._attempts.attempt("reading the store's state", self.load)  # failing, memory fills as it reads
        self._stop.clear()
        targets = [("lease", self._renew)]
        if loops:
            targets.append(("loops", self._run_loops))
            if self.collect_interval is not None:
                targets.append(("collector", self._run_collector))
        self._threads = [
            threading.Thread(target=target, name=f"runservice-{name}", daemon=True)
            for name, target in targets
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _renew(self) -> None:
        every = self.lease.ttl.total_seconds() / 5
        while not self._stop.wait(every):
            try:
                self.lease.renew()
            except ServiceError as exc:
                log.error("the lease on the store was lost (%s): stopping the loops", exc)
                self.lost.set()
                self._stop.set()
                self.wake()
                return
            except ObjstoreError as exc:  # the store failed for now: the lease may still hold
                log.warning("renewing the lease failed: %s", exc)

    def _run_loops(self) -> None:
        swept = time.monotonic()
        while not self._stop.is_set():
            self._woken.wait(self.interval)
            self._woken.clear()
            if self._stop.is_set() or not self.lease.holds():
                continue
            if time.monotonic() - swept >= self.sweep_interval.total_seconds():
                swept = time.monotonic()
                self._attempts.attempt("the sweep", self.sweep)
            self.run_once()

    def _run_collector(self) -> None:
        assert self.collect_interval is not None
        while not self._stop.wait(self.collect_interval.total_seconds()):
            if self.lease.holds():
                self._attempts.attempt("the collector's pass", self.collector.collect_once)

    def stop(self) -> None:
        """Stop the threads (the passes under way end first), wait for the fetches under way,
        then give the lease up, so that another instance takes over at once."""
        self._stop.set()
        self.wake()
        self.changes.bump_all()  # long polls answer now
        for thread in self._threads:
            thread.join(timeout=60)
        self.fetcher.close()
        if self.lease.holds():
            self._attempts.attempt("writing what memory alone has", self.state.flush)
        self.lease.release()
