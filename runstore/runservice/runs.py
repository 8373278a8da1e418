"""Runs as users see them: create, get, restart and delete."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import datetime

import attrs

from runstore import concurrency
from runstore.cache_groups import CacheGroup
from runstore.clock import now
from runstore.contract.errors import BadRequestError, ConflictError, CorruptDocumentError, NotExistError
from runstore.contract.model import Run, RunConfig, RunPage, RunPhase, RunResult, RunTask, TaskStatus
from runstore.errors import InvalidIdError
from runstore.runservice.index import Listed
from runstore.runservice.runconfig import check_group, check_run_config
from runstore.runservice.state import State
from runstore.runservice.tasks import fresh_task, new_id, parents_first

log = logging.getLogger(__name__)

DEFAULT_PAGE = 50
"""Runs in a page of :meth:`Runs.list` unless asked otherwise."""
MAX_PAGE = 500
"""The most runs one page may ask for."""
MAX_READS = 1000
"""The most run documents one page reads, refused ones included."""


class Runs:
    """The runs of a runservice's store; ``wake`` wakes the loops when one is created, restarted
    or cancelled."""

    def __init__(self, state: State, wake: Callable[[], None] = lambda: None) -> None:
        self._state = state
        self._wake = wake

    def get(self, run_id: str) -> Run:
        """The run; ``NotExistError`` if there is none."""
        return self._state.runs.get(run_id)

    def create(
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
        self._enter(run)
        log.info("run %s created in %s with %d tasks", run.id, group, len(run.tasks))
        return run

    def _enter(self, run: Run) -> None:
        """Store a new run: its index entries first, then its document."""
        self._state.index.add(run)
        self._state.runs.create(run.id, run)
        self._wake()

    def restart(self, run_id: str) -> Run:
        """A new run of a finished run's config that shares its successful tasks.

        A task is shared if it succeeded, its data was fetched, every task it depends on is
        shared too, and ``RunStore.add_run`` accepts it; every other task runs again. The
        tasks are added concurrently; one added whose parent was not is dropped again.
        """
        old = self._state.runs.get(run_id)
        if old.phase is not RunPhase.FINISHED or old.deleting:
            state = "being deleted" if old.deleting else old.phase.value
            raise ConflictError(f"run {run_id!r} is {state}: only a finished run can be restarted")
        run_id_new = new_id("run-")
        order = parents_first(old)
        candidates = [
            task for task in order if task.status is TaskStatus.SUCCESS and task.fetched and task.registered
        ]
        shared = concurrency.each(self._share(run_id_new), candidates)
        added = {task.name: done for task, done in zip(candidates, shared, strict=True)}
        new: dict[str, RunTask] = {}
        for task in order:
            if added.get(task.name, False) and all(new[parent].shared for parent in task.depends):
                new[task.name] = attrs.evolve(task, shared=True)
            else:
                new[task.name] = fresh_task(task.name, task.steps, task.depends, task.environment)
        unshared = [task for task in candidates if added[task.name] and not new[task.name].shared]
        concurrency.each(lambda task: self._state.store.remove_run(run_id_new, task.id), unshared)
        tasks = [new[task.name] for task in old.tasks]
        run = Run(
            id=run_id_new,
            group=old.group,
            cache_group=old.cache_group,
            tasks=tasks,
            creation_time=now(),
            restarted_from=old.id,
        )
        self._enter(run)
        log.info(
            "run %s restarts %s, sharing %d of %d tasks",
            run.id,
            old.id,
            sum(task.shared for task in tasks),
            len(tasks),
        )
        return run

    def cancel(self, run_id: str) -> Run:
        """Cancel an unfinished run: its tasks not started are cancelled at once, the scheduler
        stops its running ones on their executors (they fail, "cancelled"), and once their logs
        so far are fetched the run finishes as ``stopped``. ``ConflictError`` if it finished."""
        ended = now()

        def cancel(run: Run) -> Run | None:
            if run.phase is RunPhase.FINISHED:
                raise ConflictError(f"run {run_id!r} is finished: only an unfinished run can be cancelled")
            return cancelled(run, ended)

        run = self._state.runs.update(run_id, cancel)
        assert run is not None
        log.info("run %s cancelled", run_id)
        self._wake()
        return run

    def delete(self, run_id: str) -> None:
        """Delete a finished run and drop its references to task data.

        The run is marked ``deleting`` first (and entered in the index of runs being
        deleted), so that a delete cut short (a crash, a store failure) leaves a run that
        says its data may be gone; deleting it again, or the collector, finishes it.
        """
        if self._state.runs.get(run_id).phase is not RunPhase.FINISHED:  # only the loops finish runs
            raise ConflictError(f"run {run_id!r} is not finished: only a finished run can be deleted")
        self._state.index.deleting(run_id)
        run = self._state.runs.update(run_id, _deleting)
        assert run is not None
        self._state.store.delete_run(run.id, [task.id for task in run.tasks if task.registered])
        self._state.runs.delete(run.id)
        self._state.index.remove(run)
        self._state.index.deleted(run.id)
        log.info("run %s deleted", run.id)

    def _share(self, run_id: str) -> Callable[[RunTask], bool]:
        return lambda task: self._state.store.add_run(run_id, task.id)

    def list(
        self,
        *,
        group_prefix: str = "",
        phase: RunPhase | None = None,
        result: RunResult | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str = "",
    ) -> RunPage:
        """The runs whose group starts with ``group_prefix`` (and of ``phase``, ``result``),
        newest first, from ``cursor`` (a page's ``next``) on, at most ``limit``.

        It reads the index (a request per 1,000 runs passed over) and the documents of the
        runs it returns, plus those a phase or result filter refuses; a page stops early,
        with a ``next`` cursor, once it has read :data:`MAX_READS` documents.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequestError(f"limit is 1 to {MAX_PAGE}, not {limit}")
        if cursor and Listed.of(cursor) is None:
            raise BadRequestError(f"invalid cursor {cursor!r}")
        active = {entry.run_id for entry in self._state.index.active()} if phase or result else set()

        def candidate(entry: Listed) -> bool:
            finished = entry.run_id not in active
            return entry.may_match(group_prefix) and (
                phase is None or (phase is RunPhase.FINISHED) == finished
            )

        def wanted(run: Run) -> bool:
            return (
                run.group.startswith(group_prefix)
                and (phase is None or run.phase is phase)
                and (result is None or run.result is result)
            )

        candidates = filter(candidate, self._state.index.listed(after=cursor))
        runs: list[Run] = []
        last = cursor
        reads = 0
        while len(runs) < limit and reads < MAX_READS:
            batch = list(itertools.islice(candidates, limit - len(runs)))
            if not batch:
                return RunPage(runs)
            reads += len(batch)
            for entry, run in zip(batch, concurrency.each(self._listed_run, batch), strict=True):
                last = entry.name
                if run is not None and wanted(run):
                    runs.append(run)
        return RunPage(runs, last if next(candidates, None) is not None else "")

    def _listed_run(self, entry: Listed) -> Run | None:
        """The run of a listed entry; None if its document is gone or unreadable."""
        try:
            return self._state.runs.get(entry.run_id)
        except NotExistError:
            return None  # deleted meanwhile, or a create or delete that crashed
        except CorruptDocumentError as exc:
            log.warning("listing runs: %s", exc)
            return None


def _deleting(run: Run) -> Run | None:
    return None if run.deleting else attrs.evolve(run, deleting=True)


def cancelled(run: Run, ended: datetime) -> Run:
    """``run`` cancelled at ``ended``: marked so, its tasks not started cancelled."""
    tasks = [
        attrs.evolve(task, status=TaskStatus.CANCELLED, end_time=ended)
        if task.status is TaskStatus.NOTSTARTED
        else task
        for task in run.tasks
    ]
    return attrs.evolve(run, cancelled=True, tasks=tasks)
