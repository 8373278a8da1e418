"""Runs as users see them: create, get, restart and delete."""

from __future__ import annotations

import logging

import attrs

from runstore.cache_groups import CacheGroup
from runstore.clock import now
from runstore.contract.errors import BadRequestError, ConflictError
from runstore.contract.model import Run, RunConfig, RunPhase, RunTask, TaskStatus
from runstore.errors import InvalidIdError
from runstore.runservice.runconfig import check_group, check_run_config
from runstore.runservice.state import State
from runstore.runservice.tasks import fresh_task, new_id, parents_first

log = logging.getLogger(__name__)


class Runs:
    """The runs of a runservice's store."""

    def __init__(self, state: State) -> None:
        self._state = state

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
        self._state.runs.create(run.id, run)
        log.info("run %s created in %s with %d tasks", run.id, group, len(run.tasks))
        return run

    def restart(self, run_id: str) -> Run:
        """A new run of a finished run's config that shares its successful tasks.

        A task is shared if it succeeded, its data was fetched, every task it depends on is
        shared too, and ``RunStore.add_run`` accepts it; every other task runs again.
        """
        old = self._state.runs.get(run_id)
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
            if shareable and self._state.store.add_run(run_id_new, task.id):
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
        self._state.runs.create(run.id, run)
        log.info(
            "run %s restarts %s, sharing %d of %d tasks",
            run.id,
            old.id,
            sum(task.shared for task in tasks),
            len(tasks),
        )
        return run

    def delete(self, run_id: str) -> None:
        """Delete a finished run and drop its references to task data."""
        run = self._state.runs.get(run_id)
        if run.phase is not RunPhase.FINISHED:
            raise ConflictError(f"run {run_id!r} is {run.phase.value}: only a finished run can be deleted")
        self._state.store.delete_run(run.id, [task.id for task in run.tasks if task.registered])
        self._state.runs.delete(run.id)
        log.info("run %s deleted", run.id)
