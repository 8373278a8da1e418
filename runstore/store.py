"""The run store: task logs and workspace archives shared by runs, and caches."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import BinaryIO

from objstore import AlreadyExistsError, CommonPrefix, Data, Storage
from runstore import concurrency
from runstore.cache_groups import CacheGroup
from runstore.caches import CACHES, CacheStore
from runstore.errors import InvalidIdError
from runstore.ids import check_archive_step, check_id, check_step
from runstore.sharing import CollectReport, SharedArea, Steps, run_steps

LOGS = "logs/"
ARCHIVES = "workspacearchives/"
DEFAULT_GRACE = timedelta(hours=1)


class RunStore:
    """Logs, workspace archives and caches of CI runs, over any objstore ``Storage``.

    A task's data is shared by every run that references it (the run that created it,
    and restarts that reuse it) and deleted once the last reference is dropped.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def _areas(self, task_id: str) -> tuple[SharedArea, SharedArea]:
        check_id("task id", task_id)
        return SharedArea(self.storage, f"{LOGS}{task_id}/"), SharedArea(
            self.storage, f"{ARCHIVES}{task_id}/"
        )

    # -- data --------------------------------------------------------------------

    @staticmethod
    def _log_name(step: int | str) -> str:
        step = check_step(step)
        return "setup.log" if step == "setup" else f"steps/{step}.log"

    def write_log(self, task_id: str, step: int | str, data: Data) -> None:
        """Store the log of a step (an int >= 0, or ``"setup"``)."""
        logs, _ = self._areas(task_id)
        self.storage.write(logs.data_key(self._log_name(step)), data)

    def open_log(self, task_id: str, step: int | str, *, start: int = 0) -> BinaryIO:
        """Open a step's log as a stream, from byte ``start``; ``NotExistError`` if missing."""
        logs, _ = self._areas(task_id)
        return self.storage.read(logs.data_key(self._log_name(step)), start=start)

    def write_archive(self, task_id: str, step: int, data: Data) -> None:
        """Store the workspace archive (a tar) that a step saved."""
        _, archives = self._areas(task_id)
        self.storage.write(archives.data_key(f"{check_archive_step(step)}.tar"), data)

    def open_archive(self, task_id: str, step: int) -> BinaryIO:
        """Open a step's workspace archive; ``NotExistError`` if missing."""
        _, archives = self._areas(task_id)
        return self.storage.read(archives.data_key(f"{check_archive_step(step)}.tar"))

    # -- references, one step at a time ---------------------------------------------

    def create_task_steps(self, run_id: str, task_id: str, *, fresh: bool = False) -> Steps[None]:
        """:meth:`create_task`, in steps."""
        check_id("run id", run_id)
        done: list[SharedArea] = []
        for area in self._areas(task_id):
            try:
                yield from area.create(run_id, fresh=fresh)
            except AlreadyExistsError:
                for created in done:
                    yield from created.remove(run_id)
                raise
            done.append(area)

    def finish_task_steps(self, task_id: str) -> Steps[None]:
        """:meth:`finish_task`, in steps."""
        for area in self._areas(task_id):
            yield from area.finish()

    def add_run_steps(self, run_id: str, task_id: str) -> Steps[bool]:
        """:meth:`add_run`, in steps."""
        check_id("run id", run_id)
        added: list[SharedArea] = []
        for area in self._areas(task_id):
            if not (yield from area.add(run_id)):
                for done in added:
                    yield from done.remove(run_id)
                return False
            added.append(area)
        return True

    def remove_run_steps(self, run_id: str, task_id: str) -> Steps[None]:
        """:meth:`remove_run`, in steps."""
        check_id("run id", run_id)
        for area in self._areas(task_id):
            yield from area.remove(run_id)

    def collect_steps(
        self, *, grace: timedelta = DEFAULT_GRACE, run_exists: Callable[[str], bool] | None = None
    ) -> Steps[CollectReport]:
        """:meth:`collect`, in steps."""
        report = CollectReport()
        for kind in (LOGS, ARCHIVES):
            for entry in self.storage.list_keys(kind, recursive=False):
                if isinstance(entry, CommonPrefix):
                    area = SharedArea(self.storage, entry.key)
                    report += yield from area.collect(grace=grace, run_exists=run_exists)
        return report

    # -- references ----------------------------------------------------------------

    def create_task(self, run_id: str, task_id: str, *, fresh: bool = False) -> None:
        """Make ``run_id`` the first reference of a new task, before any of its data.

        ``AlreadyExistsError`` if the task already has data or references. Task ids are
        never reused: an id that was ever created (or passed to ``add_run``) must not be
        created again, even after its data is gone. ``fresh``: the caller made ``task_id``
        itself and nobody else has it, so nothing else can be there: only the markers are
        written (two requests, not six), and calling it again after a failure is safe.
        """
        if fresh:  # the markers at once
            check_id("run id", run_id)
            concurrency.each(lambda area: run_steps(area.create(run_id, fresh=True)), self._areas(task_id))
        else:
            run_steps(self.create_task_steps(run_id, task_id))

    def finish_task(self, task_id: str) -> None:
        """Mark the task's data complete; only complete data can be shared."""
        concurrency.each(lambda area: run_steps(area.finish()), self._areas(task_id))

    def add_run(self, run_id: str, task_id: str) -> bool:
        """Make a further run reference the task's complete data.

        False when the data is incomplete, gone or being deleted: then the caller runs
        the task again under a new task id. Never True for data that a concurrent
        deletion will remove.
        """
        return run_steps(self.add_run_steps(run_id, task_id))

    def remove_run(self, run_id: str, task_id: str) -> None:
        """Drop the reference of ``run_id``; delete the task's data once none remains."""
        run_steps(self.remove_run_steps(run_id, task_id))

    def delete_run(self, run_id: str, task_ids: Iterable[str], *, workers: int = concurrency.WORKERS) -> None:
        """Drop every reference of ``run_id`` to ``task_ids``, ``workers`` tasks at a time.

        Every task is tried; if any fails, the first failure is raised once all are done
        (dropping the same references again is safe).
        """
        concurrency.each(functools.partial(self.remove_run, run_id), list(task_ids), workers)

    def collect(
        self, *, grace: timedelta = DEFAULT_GRACE, run_exists: Callable[[str], bool] | None = None
    ) -> CollectReport:
        """Remove what crashed writers and deleters left behind, never referenced data.

        Only what is older than ``grace`` is touched: markers of runs for which
        ``run_exists`` says False, then tasks that no marker references (their data,
        sentinel and tombstones).
        """
        return run_steps(self.collect_steps(grace=grace, run_exists=run_exists))

    # -- caches ------------------------------------------------------------------

    def cache_groups(self) -> list[CacheGroup]:
        """Every cache group that has a folder of caches, in path order."""
        groups: list[CacheGroup] = []
        pending = [CACHES]
        while pending:
            folder = pending.pop()
            for entry in self.storage.list_keys(folder, recursive=False):
                if isinstance(entry, CommonPrefix):
                    path = entry.key[len(CACHES) :].rstrip("/")
                    try:
                        groups.append(CacheGroup(path))
                    except InvalidIdError:
                        if path.count("/") < 3:  # the folders above a group ("users/<id>/repos")
                            pending.append(entry.key)
        return sorted(groups, key=lambda group: group.path)

    def expire_caches(self, older_than: timedelta) -> int:
        """Delete the caches of every group created more than ``older_than`` ago; how many."""
        return sum(CacheStore(self.storage, group).expire(older_than) for group in self.cache_groups())

    def caches(self, cache_group: CacheGroup | str) -> CacheStore:
        """The caches of a group; a str names an explicit group (see ``CacheGroup.named``)."""
        group = cache_group if isinstance(cache_group, CacheGroup) else CacheGroup.named(cache_group)
        return CacheStore(self.storage, group)
