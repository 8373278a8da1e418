"""Two indexes beside the run documents: the unfinished runs, and every run newest first.

- ``runservice/active/<run id>``: an empty object for each unfinished run. The loops list
  this folder instead of every run, so a pass costs requests for the unfinished runs only.
- ``runservice/listed/<inverted creation time>.<run id>~<group>``: an empty object for
  each run, whose names sort newest first; the group, percent-encoded and cut to
  :data:`GROUP_CHARS`, lets a listing skip other groups without reading their runs.
- ``runservice/deleting/<run id>``: an empty object for each run being deleted, from
  before its document says so until it is gone, so that the collector finishes a delete
  cut short.

Both entries of a run are written before its document and deleted after it, and a run's
active entry is deleted only once its document is finished. So every unfinished run has
its active entry and every run its listed entry, whatever crashes; what a crash can leave
is an entry without a document (a create that died before the document, a delete after
it). Readers skip those, and :meth:`RunIndex.dangling` finds them for removal once they
are older than :data:`GRACE`, which no create in progress can be (docs/runservice.md,
"The index of unfinished runs").
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import attrs

from objstore import ObjectInfo, Storage
from runstore.clock import now
from runstore.contract.model import Run, RunPhase

ACTIVE = "runservice/active/"
LISTED = "runservice/listed/"
DELETING = "runservice/deleting/"
VERSION_KEY = "runservice/index-version"
VERSION = b"1"
GROUP_CHARS = 150
"""How much of a run's percent-encoded group its listed entry keeps (an entry's name stays
under the 255 bytes a posix file name may have)."""
GRACE = timedelta(hours=1)
"""How old an entry without a document must be before it is removed: older than any
create or delete in progress."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = 10**17  # microseconds: the year 5138


def _inverted(time: datetime) -> str:
    """``time`` as 17 digits that sort later times first (to the microsecond)."""
    return f"{_LATEST - (time - _EPOCH) // timedelta(microseconds=1):017d}"


@attrs.frozen
class Listed:
    """A listed entry: the run it names, and the start of its percent-encoded group."""

    name: str  # the entry's name under LISTED, the listing's cursor
    run_id: str
    group_start: str

    @classmethod
    def of(cls, name: str) -> Listed | None:
        """The entry of that name; None if it is not one this index writes."""
        head, tilde, group_start = name.partition("~")
        inverted, dot, run_id = head.partition(".")
        valid = tilde and dot and run_id and len(inverted) == 17 and inverted.isdigit()
        return cls(name, run_id, group_start) if valid else None

    @property
    def created(self) -> datetime:
        """When the run was created."""
        return _EPOCH + timedelta(microseconds=_LATEST - int(self.name.partition(".")[0]))

    def may_match(self, group_prefix: str) -> bool:
        """False only if the run's group cannot start with ``group_prefix``."""
        wanted = quote(group_prefix, safe="")[:GROUP_CHARS]
        return self.group_start.startswith(wanted) if len(self.group_start) >= len(wanted) else False


@attrs.frozen
class Active:
    """An active entry: an unfinished run, and when the entry was written."""

    run_id: str
    written: datetime


class RunIndex:
    """The indexes of a runservice's store; the active entries are kept in memory once read
    (the lease holder is the only writer), read again by :meth:`reload`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._active: dict[str, datetime] | None = None  # run id -> when its entry was written

    @staticmethod
    def listed_name(run: Run) -> str:
        group = quote(run.group, safe="")[:GROUP_CHARS]
        return f"{_inverted(run.creation_time or _EPOCH)}.{run.id}~{group}"

    def add(self, run: Run) -> None:
        """Enter a new run, before its document is written."""
        self.storage.write(ACTIVE + run.id, b"")
        self._entered(run.id, now())
        self.storage.write(LISTED + self.listed_name(run), b"")

    def finished(self, run_id: str) -> None:
        """Drop the active entry of a run whose document is finished."""
        self.storage.delete(ACTIVE + run_id)
        self._entered(run_id, None)

    def remove(self, run: Run) -> None:
        """Drop both entries of a run whose document is deleted."""
        self.storage.delete_many([ACTIVE + run.id, LISTED + self.listed_name(run)])
        self._entered(run.id, None)

    def _entered(self, run_id: str, written: datetime | None) -> None:
        with self._lock:
            if self._active is not None:
                if written is None:
                    self._active.pop(run_id, None)
                else:
                    self._active[run_id] = written

    def deleting(self, run_id: str) -> None:
        """Enter a run whose delete starts."""
        self.storage.write(DELETING + run_id, b"")

    def deleted(self, run_id: str) -> None:
        """Drop the entry of a run whose delete is done."""
        self.storage.delete(DELETING + run_id)

    def being_deleted(self) -> list[str]:
        """The runs whose delete started and may not be done."""
        return [key[len(DELETING) :] for key in self.storage.list_keys(DELETING)]

    def active(self) -> list[Active]:
        """The active entries, in run id order (listed once, then known in memory)."""
        with self._lock:
            known = None if self._active is None else dict(self._active)
        if known is None:
            known = self.reload()
        return [Active(run_id, written) for run_id, written in sorted(known.items())]

    def reload(self) -> dict[str, datetime]:
        """List the active entries again (one request per 1,000); run id -> when written.

        An entry this index writes while it lists is kept, whether the listing saw it or not.
        """
        started = now()
        listed = {
            info.key[len(ACTIVE) :]: info.last_modified
            for info in self.storage.list(ACTIVE)
            if isinstance(info, ObjectInfo)
        }
        with self._lock:
            during = {run_id: at for run_id, at in (self._active or {}).items() if at >= started}
            self._active = {**listed, **during}
            return dict(self._active)

    def listed(self, after: str = "") -> Iterator[Listed]:
        """The listed entries newest first, from the one after the entry named ``after``."""
        start = LISTED + after if after else ""
        for key in self.storage.list_keys(LISTED, start_after=start):
            entry = Listed.of(key[len(LISTED) :])
            if entry is not None:
                yield entry

    def remove_dangling(self, run_ids: Collection[str]) -> int:
        """Remove the entries older than :data:`GRACE` of runs not in ``run_ids`` (the runs
        whose document exists); how many."""
        old = now() - GRACE
        dangling = [
            info.key
            for prefix, run_id in ((ACTIVE, _active_run), (LISTED, _listed_run))
            for info in self.storage.list(prefix)
            if isinstance(info, ObjectInfo) and info.last_modified < old and run_id(info.key) not in run_ids
        ]
        self.storage.delete_many(dangling)
        return len(dangling)

    def is_current(self) -> bool:
        """Whether the store's runs were entered (by :meth:`rebuild`, or since the store began)."""
        return self.storage.exists(VERSION_KEY)

    def rebuild(self, runs: Iterable[Run]) -> int:
        """Enter every run of a store written before the indexes existed; how many."""
        count = 0
        for run in runs:
            if run.phase is not RunPhase.FINISHED:
                self.storage.write(ACTIVE + run.id, b"")
                self._entered(run.id, now())
            self.storage.write(LISTED + self.listed_name(run), b"")
            count += 1
        self.storage.write(VERSION_KEY, VERSION)
        return count


def _active_run(key: str) -> str:
    return key[len(ACTIVE) :]


def _listed_run(key: str) -> str:
    entry = Listed.of(key[len(LISTED) :])
    return entry.run_id if entry is not None else ""
