"""The fetcher: copies finished tasks' logs and archives from their executors into the run store."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import BinaryIO, cast

from runstore.contract.clients import ExecutorClient
from runstore.contract.errors import NotExistError, RemoteServiceError
from runstore.contract.model import ExecutorTask, FetchPhase, RunTask, TaskStatus
from runstore.runservice.absences import Absences
from runstore.runservice.attempts import Attempts
from runstore.runservice.changes import Changes
from runstore.runservice.executors import follow
from runstore.runservice.state import State
from runstore.runservice.tasks import Fetch, find_task, pending_fetches

log = logging.getLogger(__name__)


WORKERS = 8
"""Fetches at once, all executors together."""
PER_EXECUTOR = 2
"""Fetches at once from one executor: a slow or hostile one holds no more workers."""


class Fetcher:
    """Fetches each finished executor task's data, then deletes that executor task.

    Fetches run concurrently in a pool of :data:`WORKERS` threads, at most
    :data:`PER_EXECUTOR` from one executor, each request under the deadline of
    :class:`ExecutorClient`. A fetch from an executor whose record is gone waits while
    the executor may come back with the files (:class:`Absences`), and records the data
    as unavailable only once it has been gone past ``executor_timeout``.
    """

    def __init__(
        self,
        state: State,
        attempts: Attempts,
        absences: Absences,
        executor_timeout: timedelta,
        *,
        token: str | None = None,
        changes: Changes | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._state = state
        self._changes = changes or Changes()
        self._wake = wake
        self._attempts = attempts
        self._absences = absences
        self.executor_timeout = executor_timeout
        self._token = token  # the runservice's, for the executors
        self._clients: dict[str, ExecutorClient] = {}
        self._lock = threading.Lock()  # guards _clients, _fetching and _pool
        self._fetching: dict[str, str] = {}  # executor task id -> executor id, while fetched
        self._pool: ThreadPoolExecutor | None = None

    def fetch_once(self, *, wait: bool = True) -> None:
        """Start fetching the data of every finished executor task not being fetched yet
        (within the bounds above); with ``wait``, return once these fetches ended."""
        executor_tasks = list(self._attempts.each(self._state.executor_tasks))
        started = [
            future
            for executor_task in executor_tasks
            if executor_task.phase.finished and (future := self._start(executor_task)) is not None
        ]
        self._absences.forget({task.executor_id for task in executor_tasks}, self.executor_timeout)
        if wait:
            futures.wait(started)

    def _start(self, executor_task: ExecutorTask) -> Future[None] | None:
        with self._lock:
            busy = list(self._fetching.values()).count(executor_task.executor_id)
            if executor_task.id in self._fetching or busy >= PER_EXECUTOR:
                return None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="runservice-fetch")
            self._fetching[executor_task.id] = executor_task.executor_id
            return self._pool.submit(self._attempt, executor_task)

    def _attempt(self, executor_task: ExecutorTask) -> None:
        try:
            fetch = functools.partial(self._fetch, executor_task)
            self._attempts.attempt(f"fetching task {executor_task.id}", fetch)
        finally:
            with self._lock:
                del self._fetching[executor_task.id]
            self._wake()  # its run may move on, or another fetch may start

    def _fetch(self, executor_task: ExecutorTask) -> None:
        state = self._state
        try:
            run = state.runs.get(executor_task.run_id)
        except NotExistError:
            state.executor_tasks.delete(executor_task.id)
            self._changes.bump(executor_task.executor_id)
            return
        task = find_task(run, executor_task.id)
        if task is not None and not task.status.finished:  # it follows in memory: not if that was lost
            follow(state, executor_task)
            task = find_task(state.runs.get(executor_task.run_id), executor_task.id)
        if task is None or not task.status.finished:
            return
        try:
            executor = state.executors.get(executor_task.executor_id)
        except NotExistError:
            if not self._absences.gone_for_good(executor_task.executor_id, self.executor_timeout):
                return  # its record was deleted, but it may come back with the files: wait for it
            executor = None
        client = self._client(executor.listen_url) if executor is not None else None

        records: list[Callable[[RunTask], RunTask]] = []
        try:
            for fetch in pending_fetches(task, state.store):
                made = not fetch.never_made
                phase = self._fetch_one(client, task.id, fetch) if made else FetchPhase.UNAVAILABLE
                records.append(functools.partial(fetch.record, phase))
        finally:  # what was fetched is recorded in one write, even if a later fetch failed
            if records:
                recorded = state.change_task(run.id, executor_task.id, functools.partial(_apply, records))
                task = find_task(recorded, executor_task.id)
                self._wake()  # its dependents may start now
        assert task is not None
        if task.fetched:
            if task.status is TaskStatus.SUCCESS and all(
                phase is FetchPhase.FINISHED for phase in [task.setup_log_fetch, *task.archive_fetch.values()]
            ):
                state.store.finish_task(task.id)
            state.executor_tasks.delete(task.id)  # frees the executor's slot at once
            self._changes.bump(executor_task.executor_id)
            log.info("task %s fetched; its executor task is deleted", task.id)

    def _fetch_one(self, client: ExecutorClient | None, task_id: str, fetch: Fetch) -> FetchPhase:
        """Copy one log or archive from the executor (None: gone for good) into the run store."""
        if client is None:
            return FetchPhase.UNAVAILABLE
        try:
            if fetch.kind == "log":
                download = client.log(task_id, fetch.step)
            else:
                assert isinstance(fetch.step, int)
                download = client.archive(task_id, fetch.step)
        except RemoteServiceError as exc:
            if exc.status == 404:
                return FetchPhase.UNAVAILABLE
            raise
        with download:
            fetch.write(cast(BinaryIO, download))  # a binary stream, as objstore reads one
        return FetchPhase.FINISHED

    def client_of(self, executor_id: str) -> ExecutorClient | None:
        """A client of the executor as its record has it; None if it has no record."""
        try:
            return self._client(self._state.executors.get(executor_id).listen_url)
        except NotExistError:
            return None

    def _client(self, url: str) -> ExecutorClient:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = ExecutorClient(url, token=self._token)
            return self._clients[url]

    def close(self) -> None:
        """Wait for the fetches under way, then close the connections to executors."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _apply(records: list[Callable[[RunTask], RunTask]], task: RunTask) -> RunTask:
    for record in records:
        task = record(task)
    return task
