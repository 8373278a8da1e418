"""The collector: garbage collection and run retention, a pass at a time."""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta
from urllib.parse import unquote

import attrs

from runstore.clock import now
from runstore.contract.errors import NotExistError
from runstore.contract.model import CollectionReport
from runstore.runservice.attempts import Attempts
from runstore.runservice.index import GROUP_CHARS, Listed
from runstore.runservice.runs import Runs
from runstore.runservice.state import State
from runstore.store import DEFAULT_GRACE

log = logging.getLogger(__name__)


@attrs.frozen
class Retention:
    """Which finished runs a pass deletes: those older than ``max_age``, and in each group
    those after the newest ``keep_last`` finished ones (either rule; None: not applied)."""

    max_age: timedelta | None = None
    keep_last: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ValueError(f"a retention age is over 0, not {self.max_age}")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"a retention count is at least 1, not {self.keep_last}")

    @property
    def applies(self) -> bool:
        return self.max_age is not None or self.keep_last is not None


NO_RETENTION = Retention()
"""Keep every run."""


class Collector:
    """Finishes the deletes cut short, deletes the runs the retention policy gives up
    (through the deletion protocol), then
    removes what crashed writers and deleters left (:meth:`RunStore.collect`, older than
    ``grace``), the caches older than ``cache_ttl``, and index entries without a run.

    Every step is safe to repeat and to interrupt: a pass killed half-way leaves only what
    the next pass removes, never referenced data. One pass runs at a time (the collector's
    thread and the API's ``collect`` take turns).
    """

    def __init__(
        self,
        state: State,
        attempts: Attempts,
        runs: Runs,
        *,
        grace: timedelta = DEFAULT_GRACE,
        cache_ttl: timedelta | None = None,
        retention: Retention = NO_RETENTION,
    ) -> None:
        self._state = state
        self._attempts = attempts
        self._runs = runs
        self.grace = grace
        self.cache_ttl = cache_ttl
        self.retention = retention
        self._passing = threading.Lock()

    def collect_once(self) -> CollectionReport:
        """One pass, once any pass under way has ended; what it removed is logged and returned."""
        with self._passing:
            return self._collect()

    def _collect(self) -> CollectionReport:
        state = self._state
        deleted = self._delete_all(state.index.being_deleted())  # deletes cut short
        if self.retention.applies:
            deleted += self._apply_retention()
        run_ids = set(state.runs.ids())
        collected = state.store.collect(grace=self.grace, run_exists=run_ids.__contains__)
        expired = state.store.expire_caches(self.cache_ttl) if self.cache_ttl is not None else 0
        dangling = state.index.remove_dangling(run_ids)
        report = CollectionReport(
            deleted, collected.markers_removed, collected.areas_deleted, expired, dangling
        )
        log.info(
            "collected: %d run(s) deleted (retention, deletes cut short), %d stale marker(s) and"
            " %d unreferenced task area(s) removed, %d cache(s) expired, %d index entr(y/ies)"
            " without a run removed",
            *attrs.astuple(report),
        )
        return report

    def _apply_retention(self) -> int:
        """Delete the finished runs the policy gives up; how many."""
        active = {entry.run_id for entry in self._state.index.active()}
        oldest = now() - self.retention.max_age if self.retention.max_age is not None else None
        kept: dict[str, int] = {}  # group -> finished runs kept so far, newest first
        doomed: list[str] = []
        for entry in self._state.index.listed():
            if entry.run_id in active:
                continue
            group = self._group(entry)
            if group is None:
                continue  # no document: the index's own garbage
            kept[group] = kept.get(group, 0) + 1
            too_many = self.retention.keep_last is not None and kept[group] > self.retention.keep_last
            if too_many or (oldest is not None and entry.created < oldest):
                doomed.append(entry.run_id)
        return self._delete_all(doomed)

    def _delete_all(self, run_ids: list[str]) -> int:
        """Delete these runs, each on its own; how many went."""
        deleted: list[str] = []
        for run_id in run_ids:
            self._attempts.attempt(f"deleting run {run_id}", functools.partial(self._delete, run_id, deleted))
        return len(deleted)

    def _delete(self, run_id: str, deleted: list[str]) -> None:
        try:
            self._runs.delete(run_id)
        except NotExistError:
            self._state.index.deleted(run_id)  # gone already: only the entry was left
            return
        deleted.append(run_id)

    def _group(self, entry: Listed) -> str | None:
        """The group of a listed run: from its entry, or, where the entry holds only its
        start, from its document (None if it has none)."""
        if len(entry.group_start) < GROUP_CHARS:
            return unquote(entry.group_start)
        try:
            return self._state.runs.get(entry.run_id).group
        except NotExistError:
            return None
