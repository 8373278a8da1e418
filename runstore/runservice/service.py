"""The runservice: owns runs, hands runnable tasks to executors, fetches their data.

Its state is three kinds of documents in an objstore ``Storage`` (runs, executors,
executor tasks), changed by compare-and-swap. One instance at a time owns a store
(:class:`Lease`). The loops (:meth:`RunService.schedule_once`, :meth:`fetch_once`,
:meth:`check_executor_tasks_once`, :meth:`reap_executors_once`) run in one thread;
the HTTP handlers run concurrently with them. A loop handles each run, executor task or
executor on its own: a failure with one (a document that cannot be read, a bug) is
logged, and the loop goes on with the others.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import BinaryIO, TypeVar

import attrs

from objstore import AlreadyExistsError, Storage
from objstore import NotExistError as ObjectMissing
from runstore.cache_groups import CacheGroup
from runstore.clock import now
from runstore.contract.errors import (
    BadRequestError,
    ConflictError,
    NotExistError,
    RemoteServiceError,
    ServiceError,
)
from runstore.contract.http import ServiceClient, UnreachableError
from runstore.contract.model import (
    ArchiveRef,
    Executor,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    FetchPhase,
    Run,
    RunConfig,
    RunPhase,
    RunResult,
    RunTask,
    StepKind,
    StepState,
    TaskStatus,
)
from runstore.errors import InvalidIdError
from runstore.runservice.lease import Lease
from runstore.runservice.reports import check_report, settle_report
from runstore.runservice.runconfig import check_group, check_run_config
from runstore.runservice.state import Documents
from runstore.runservice.tasks import (
    allowed,
    ancestors,
    find_task,
    fresh_task,
    new_id,
    parents_first,
    pending_fetches,
    replace_task,
)
from runstore.store import RunStore

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How many failing items the loops remember, to log each failure once (not every pass).
MAX_TROUBLES = 1000


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
        self.storage = storage
        self.store = RunStore(storage)
        self.runs = Documents(storage, "runs", Run)
        self.executors = Documents(storage, "executors", Executor)
        self.executor_tasks = Documents(storage, "executortasks", ExecutorTask)
        self.executor_timeout = executor_timeout
        self.interval = interval
        self.lease = Lease(storage, f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}", lease_ttl)
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._clients: dict[str, ServiceClient] = {}
        self._guard = threading.Lock()  # guards _last_seen and _troubles
        # Executors whose record is gone, and when they were last heard of: the fetcher
        # waits for them to come back with their tasks' files until the executor timeout.
        self._last_seen: dict[str, datetime] = {}
        self._troubles: dict[str, str] = {}  # a failing item -> its error, as last logged

    # -- runs ------------------------------------------------------------------------

    def create_run(
        self,
        config: RunConfig,
        group: str,
        *,
        repo_uuid: str = "",
        cache_group: CacheGroup | str | None = None,
    ) -> Run:
        """A new queued run of ``config`` in ``group``.

        Its tasks use the caches of ``cache_group`` (a str names an explicit group, see
        ``CacheGroup.named``); by default, those of the project or of the direct run (see
        ``check_group``). Bad input raises ``BadRequestError`` before anything is written.
        """
        check_run_config(config)
        default = check_group(group, repo_uuid)
        try:
            caches = default if cache_group is None else CacheGroup.of(cache_group)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        run = Run(
            id=new_id("run-"),
            group=group,
            cache_group=caches.path,
            tasks=[
                fresh_task(task.name, task.steps, task.depends, task.environment) for task in config.tasks
            ],
            creation_time=now(),
        )
        self.runs.create(run.id, run)
        log.info("run %s created in %s with %d tasks", run.id, group, len(run.tasks))
        return run

    def restart_run(self, run_id: str) -> Run:
        """A new run of a finished run's config that shares its successful tasks.

        A task is shared if it succeeded, its data was fetched, every task it depends on is
        shared too, and ``RunStore.add_run`` accepts it; every other task runs again.
        """
        old = self.runs.get(run_id)
        if old.phase is not RunPhase.FINISHED:
            raise ConflictError(f"run {run_id!r} is {old.phase.value}: only a finished run can be restarted")
        run_id_new = new_id("run-")
        new: dict[str, RunTask] = {}
        for task in parents_first(old):
            shareable = (
                task.status is TaskStatus.SUCCESS
                and task.fetched
                and task.registered
                and all(new[parent].shared for parent in task.depends)
            )
            if shareable and self.store.add_run(run_id_new, task.id):
                new[task.name] = attrs.evolve(task, shared=True)
            else:
                new[task.name] = fresh_task(task.name, task.steps, task.depends, task.environment)
        tasks = [new[task.name] for task in old.tasks]
        run = Run(
            id=run_id_new,
            group=old.group,
            cache_group=old.cache_group,
            tasks=tasks,
            creation_time=now(),
            restarted_from=old.id,
        )
        self.runs.create(run.id, run)
        log.info(
            "run %s restarts %s, sharing %d of %d tasks",
            run.id,
            old.id,
            sum(task.shared for task in tasks),
            len(tasks),
        )
        return run

    def delete_run(self, run_id: str) -> None:
        """Delete a finished run and drop its references to task data."""
        run = self.runs.get(run_id)
        if run.phase is not RunPhase.FINISHED:
            raise ConflictError(f"run {run_id!r} is {run.phase.value}: only a finished run can be deleted")
        self.store.delete_run(run.id, [task.id for task in run.tasks if task.registered])
        self.runs.delete(run.id)
        log.info("run %s deleted", run.id)

    # -- executors -------------------------------------------------------------------

    def executor_status(self, executor_id: str, status: ExecutorStatus) -> Executor:
        """Register an executor, or refresh what it reports."""
        executor = Executor.reported(executor_id, status, now())
        self.executors.put(executor_id, executor)
        with self._guard:
            self._last_seen.pop(executor_id, None)  # back: the fetcher fetches from it again
        return executor

    def tasks_of_executor(self, executor_id: str) -> list[ExecutorTask]:
        if not self.executors.exists(executor_id):
            raise NotExistError(f"executor {executor_id!r} is not registered")
        return [task for task in self._each(self.executor_tasks) if task.executor_id == executor_id]

    def delete_executor(self, executor_id: str) -> None:
        """Delete an executor's record only; its tasks are the checker's and the fetcher's business."""
        executor = self._executor(executor_id)
        self._forget_executor(executor_id, executor.last_status_time if executor is not None else None)

    def _forget_executor(self, executor_id: str, last_seen: datetime | None) -> None:
        with self._guard:
            self._last_seen[executor_id] = last_seen or now()
        self.executors.delete(executor_id)
        log.info("executor %s deleted", executor_id)

    def executor_task_status(self, task_id: str, status: ExecutorTaskStatus) -> None:
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

        task = self.executor_tasks.update(task_id, change)
        assert task is not None
        self._follow(task)

    def _follow(self, executor_task: ExecutorTask) -> None:
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
            self.runs.update(executor_task.run_id, change)
        except NotExistError:
            log.warning("executor task %s belongs to a deleted run", executor_task.id)

    # -- the loops -------------------------------------------------------------------

    def schedule_once(self) -> None:
        """Advance every unfinished run: skip, assign, start and finish tasks and runs."""
        for run in list(self._each(self.runs)):
            if run.phase is not RunPhase.FINISHED:
                self._attempt(f"advancing run {run.id}", functools.partial(self._advance, run.id))

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

        run = self.runs.update(run_id, settle)
        assert run is not None
        for task in run.tasks:
            if task.status is TaskStatus.NOTSTARTED and all(
                run.task(name).status is TaskStatus.SUCCESS for name in task.depends
            ):
                self._attempt(f"assigning task {task.id}", functools.partial(self._assign, run, task))
        self._finish_if_done(run_id)

    def _assign(self, run: Run, task: RunTask) -> None:
        if self.executor_tasks.exists(task.id):
            return
        executor = self._choose_executor()
        if executor is None:
            return
        if not task.registered:
            # The run's marker comes before any data; AlreadyExistsError means an earlier
            # attempt registered the task but did not record it.
            with contextlib.suppress(AlreadyExistsError):
                self.store.create_task(run.id, task.id)
            self._change_task(run.id, task.id, lambda t: attrs.evolve(t, registered=True))
        executor_task = ExecutorTask(
            id=task.id,
            run_id=run.id,
            executor_id=executor.id,
            task_name=task.name,
            steps=task.steps,
            environment=task.environment,
            cache_group=run.cache_group,
            workspace=self._workspace_of(run, task),
            step_states=[StepState() for _ in task.steps],
        )
        try:
            self.executor_tasks.create(task.id, executor_task)
        except AlreadyExistsError:
            return
        log.info("task %s (%s of run %s) assigned to executor %s", task.id, task.name, run.id, executor.id)

    def _workspace_of(self, run: Run, task: RunTask) -> list[ArchiveRef]:
        """The archives a task restores: those of its ancestors, parents' ancestors first."""
        return [
            ArchiveRef(ancestor.id, number)
            for ancestor in ancestors(run, task)
            for number, step in enumerate(ancestor.steps)
            if step.kind is StepKind.SAVE_TO_WORKSPACE
        ]

    def _choose_executor(self) -> Executor | None:
        limit = now() - self.executor_timeout
        load: dict[str, int] = {}
        for executor_task in self._each(self.executor_tasks):
            load[executor_task.executor_id] = load.get(executor_task.executor_id, 0) + 1
        candidates = [
            (executor.active_tasks_limit - load.get(executor.id, 0), executor.id, executor)
            for executor in self._each(self.executors)
            if executor.last_status_time is not None and executor.last_status_time > limit
        ]
        free = [candidate for candidate in candidates if candidate[0] > 0]
        return max(free, key=lambda candidate: candidate[:2])[2] if free else None

    def _finish_if_done(self, run_id: str) -> None:
        # Executor tasks are created and deleted by the loops only (this thread): whether a
        # run has one can be read before the change.
        run = self.runs.get(run_id)
        active = any(self.executor_tasks.exists(task.id) for task in run.tasks if not task.shared)

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

        finished = self.runs.update(run_id, finish)
        if finished is not None and finished.phase is not run.phase and finished.phase is RunPhase.FINISHED:
            log.info("run %s finished: %s", finished.id, finished.result.value)

    def fetch_once(self) -> None:
        """Fetch the data of every finished executor task, then delete that executor task."""
        executor_tasks = list(self._each(self.executor_tasks))
        for executor_task in executor_tasks:
            if executor_task.phase.finished:
                fetch = functools.partial(self._fetch, executor_task)
                self._attempt(f"fetching task {executor_task.id}", fetch)
        holders = {executor_task.executor_id for executor_task in executor_tasks}
        with self._guard:  # forget the executors gone for good that hold nothing more
            for executor_id, last_seen in list(self._last_seen.items()):
                if executor_id not in holders and now() - last_seen > self.executor_timeout:
                    del self._last_seen[executor_id]

    def _fetch(self, executor_task: ExecutorTask) -> None:
        try:
            run = self.runs.get(executor_task.run_id)
        except NotExistError:
            self.executor_tasks.delete(executor_task.id)
            return
        task = find_task(run, executor_task.id)
        if task is None or not task.status.finished:
            return  # the run task follows first
        executor = self._executor(executor_task.executor_id)
        if executor is None and not self._gone_for_good(executor_task.executor_id):
            return  # its record was deleted, but it may come back with the files: wait for it
        client = self._client(executor.listen_url) if executor is not None else None
        for source, never_made, write, record in pending_fetches(task, self.store):
            if never_made:
                phase = FetchPhase.UNAVAILABLE  # the step never ran, or failed before its archive
            else:
                phase = self._fetch_one(client, f"/api/v1/tasks/{task.id}/{source}", write)
            self._change_task(run.id, task.id, functools.partial(record, phase))
        task = find_task(self.runs.get(run.id), task.id)
        assert task is not None
        if task.fetched:
            if task.status is TaskStatus.SUCCESS and all(
                phase is FetchPhase.FINISHED for phase in [task.setup_log_fetch, *task.archive_fetch.values()]
            ):
                self.store.finish_task(task.id)
            self.executor_tasks.delete(task.id)  # frees the executor's slot at once
            log.info("task %s fetched; its executor task is deleted", task.id)

    def _fetch_one(
        self, client: ServiceClient | None, path: str, write: Callable[[BinaryIO], None]
    ) -> FetchPhase:
        """Copy one log or archive from the executor into the run store."""
        if client is None:
            return FetchPhase.UNAVAILABLE  # the executor has been gone past the executor timeout
        try:
            response = client.request("GET", path, stream=True)
        except RemoteServiceError as exc:
            if exc.status == 404:
                return FetchPhase.UNAVAILABLE
            raise
        try:
            write(response)  # type: ignore[arg-type]
        finally:
            response.release_conn()
        return FetchPhase.FINISHED

    def _change_task(self, run_id: str, task_id: str, change: Callable[[RunTask], RunTask]) -> None:
        def apply(run: Run) -> Run:
            task = find_task(run, task_id)
            assert task is not None
            return replace_task(run, change(task))

        self.runs.update(run_id, apply)

    def _gone_for_good(self, executor_id: str) -> bool:
        """Whether an executor without a record has not been heard of past the executor timeout.

        Its last status report counts, as recorded when its record was deleted; failing
        that (the runservice restarted since), when the fetcher first missed it.
        """
        with self._guard:
            last_seen = self._last_seen.setdefault(executor_id, now())
        return now() - last_seen > self.executor_timeout

    def check_executor_tasks_once(self) -> None:
        """Fail every unfinished executor task whose executor no longer exists."""
        for executor_task in list(self._each(self.executor_tasks)):
            if not executor_task.phase.finished:
                self._attempt(
                    f"checking task {executor_task.id}", functools.partial(self._check, executor_task)
                )

    def _check(self, executor_task: ExecutorTask) -> None:
        if self.executors.exists(executor_task.executor_id):
            return
        ended = now()

        def fail(task: ExecutorTask) -> ExecutorTask | None:
            return None if task.phase.finished else task.failed("executor deleted", ended)

        try:
            failed = self.executor_tasks.update(executor_task.id, fail)
        except NotExistError:
            return
        assert failed is not None
        log.info("task %s failed: its executor %s is gone", failed.id, failed.executor_id)
        self._follow(failed)

    def reap_executors_once(self) -> None:
        """Delete the records of executors silent for longer than the timeout."""
        limit = now() - self.executor_timeout
        for executor in list(self._each(self.executors)):
            if executor.last_status_time is None or executor.last_status_time < limit:
                log.info("executor %s silent since %s", executor.id, executor.last_status_time)
                self._attempt(
                    f"reaping executor {executor.id}",
                    functools.partial(self._forget_executor, executor.id, executor.last_status_time),
                )

    def run_once(self) -> None:
        """One pass of every loop; one that fails is logged, and the others still run."""
        for loop in (
            self.schedule_once,
            self.check_executor_tasks_once,
            self.fetch_once,
            self.reap_executors_once,
            self.schedule_once,
        ):
            self._attempt(f"the loop {loop.__name__}", loop)

    # -- failures of one item --------------------------------------------------------------

    def _each(self, documents: Documents[T]) -> Iterator[T]:
        """Every document of a kind that can be read; one that cannot is logged and skipped."""
        for doc_id in documents.ids():
            try:
                yield documents.get(doc_id)
            except NotExistError:
                continue  # deleted meanwhile
            except (ValueError, TypeError) as exc:  # written by other means than this service
                self._trouble(f"reading {documents.kind} document {doc_id}", exc)

    def _attempt(self, item: str, action: Callable[[], None]) -> None:
        """Do ``action``; if it fails, log it (once while it fails the same way) and return."""
        try:
            action()
        except Exception as exc:  # one item's failure never stops a loop over the others
            self._trouble(item, exc)
        else:
            with self._guard:
                self._troubles.pop(item, None)

    def _trouble(self, item: str, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._guard:
            repeated = self._troubles.get(item) == message
            if not repeated:
                if len(self._troubles) >= MAX_TROUBLES:
                    self._troubles.clear()
                self._troubles[item] = message
        if repeated:
            log.debug("%s still fails: %s", item, message)
        elif isinstance(exc, ServiceError):
            log.warning("%s failed: %s", item, message)
        else:
            log.error("%s failed: %s", item, message, exc_info=exc)

    # -- running -----------------------------------------------------------------------

    def _executor(self, executor_id: str) -> Executor | None:
        try:
            return self.executors.get(executor_id)
        except NotExistError:
            return None

    def _client(self, url: str) -> ServiceClient:
        if url not in self._clients:
            self._clients[url] = ServiceClient(url)
        return self._clients[url]

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
            try:
                self.run_once()
            except (ServiceError, UnreachableError, ObjectMissing):
                log.exception("a loop pass failed")
            except Exception:
                log.exception("a loop pass failed unexpectedly")

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.join(timeout=30)
        self.lease.release()
        for client in self._clients.values():
            client.close()


_BLOCKING = (TaskStatus.FAILED, TaskStatus.SKIPPED)
