"""Data shared by several runs, deleted only once no run references it.

One *area* holds the data of one task in one kind of storage (its logs, or its
workspace archives) and the flags of the deletion protocol, all under a root prefix:

- ``<root>data/...``: the data
- ``<root>runs/<run id>``: a *marker* for each run that references the data
- ``<root>complete``: the *sentinel*, written once the data is complete
- ``<root>tombstones/<deleter id>``: a *tombstone* for each deleter at work

A referencing run writes its marker, then lists the tombstones, then checks the
sentinel. A deleter writes its tombstone, then lists the markers, and only if none
remain deletes the sentinel first, then the data, then the tombstones. Each side writes
its own flag before it reads the other's, so on a strongly consistent store one of them
always sees the other (see ``docs/runstore.md`` for the argument).

Every operation is a generator that yields after each storage request, so that a test
can interleave the steps of several operations; :func:`run_steps` runs one to its end.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import TypeVar

import attrs

from objstore import AlreadyExistsError, ObjectInfo, Storage
from runstore.clock import now

T = TypeVar("T")
Steps = Generator[str, None, T]
"""An operation in steps: it yields the name of each step it has just done."""


def run_steps(steps: Steps[T]) -> T:
    """Run an operation to its end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


@attrs.frozen
class CollectReport:
    """What :meth:`SharedArea.collect` removed."""

    markers_removed: int = 0
    areas_deleted: int = 0

    def __add__(self, other: CollectReport) -> CollectReport:
        return CollectReport(
            self.markers_removed + other.markers_removed, self.areas_deleted + other.areas_deleted
        )


@attrs.frozen
class SharedArea:
    """The data of one task under ``root`` (ending with "/"), and its references."""

    storage: Storage
    root: str

    def data_key(self, name: str) -> str:
        return f"{self.root}data/{name}"

    def marker_key(self, run_id: str) -> str:
        return f"{self.root}runs/{run_id}"

    @property
    def sentinel_key(self) -> str:
        return f"{self.root}complete"

    def _any(self, folder: str) -> bool:
        return any(True for _ in itertools.islice(self.storage.list_keys(self.root + folder), 1))

    # -- references ---------------------------------------------------------------

    def create(self, run_id: str, *, fresh: bool = False) -> Steps[None]:
        """Make ``run_id`` the first reference of a new, empty area.

        ``fresh``: the caller made the area's name itself and nobody else has it, so no other
        reference or deleter can be there: only the marker is written (create-only; one that
        exists is ``run_id``'s, from an earlier attempt).
        """
        if fresh:
            with contextlib.suppress(AlreadyExistsError):
                self.storage.write(self.marker_key(run_id), b"", if_none_match=True)
            yield "marker written"
            return
        if any(True for _ in itertools.islice(self.storage.list_keys(self.root), 1)):
            raise AlreadyExistsError(self.root)
        yield "checked empty"
        self.storage.write(self.marker_key(run_id), b"", if_none_match=True)
        yield "marker written"
        busy = self._any("tombstones/")
        yield "tombstones listed"
        if busy:
            yield from self.remove(run_id)
            raise AlreadyExistsError(self.root)

    def finish(self) -> Steps[None]:
        """Mark the data complete, so that other runs may share it."""
        self.storage.write(self.sentinel_key, b"")
        yield "sentinel written"

    def add(self, run_id: str) -> Steps[bool]:
        """Make ``run_id`` reference the complete data; False if it is incomplete or going.

        ``run_id`` must not reference the area already: a False answer drops its marker.
        """
        self.storage.write(self.marker_key(run_id), b"")
        yield "marker written"
        busy = self._any("tombstones/")
        yield "tombstones listed"
        complete = not busy and self.storage.exists(self.sentinel_key)
        if not busy:
            yield "sentinel checked"
        if not complete:
            yield from self.remove(run_id)
        return complete

    def remove(self, run_id: str) -> Steps[bool]:
        """Drop the reference of ``run_id``; delete the data if no reference remains.

        Returns whether this call deleted the data.
        """
        self.storage.delete(self.marker_key(run_id))
        yield "marker deleted"
        return (yield from self.delete_unreferenced())

    def delete_unreferenced(self) -> Steps[bool]:
        """Delete the data if no run references it (the deleter's side); whether it did."""
        tombstone = f"{self.root}tombstones/{secrets.token_hex(8)}"
        self.storage.write(tombstone, b"")
        yield "tombstone written"
        referenced = self._any("runs/")
        yield "markers listed"
        if referenced:
            self.storage.delete(tombstone)
            yield "tombstone deleted"
            return False
        self.storage.delete(self.sentinel_key)
        yield "sentinel deleted"
        for folder in ("data/", "tombstones/"):
            self.storage.delete_many(list(self.storage.list_keys(self.root + folder)))
            yield f"{folder[:-1]} deleted"
        return True

    # -- garbage ----------------------------------------------------------------

    def collect(
        self, *, grace: timedelta, run_exists: Callable[[str], bool] | None = None
    ) -> Steps[CollectReport]:
        """Remove what crashed writers and deleters left, once older than ``grace``.

        Markers of runs for which ``run_exists`` is False are removed; then, if no
        marker remains, the area is deleted through the deleter's protocol. Referenced
        data, and the tombstones beside it, are never touched.
        """
        objects = [entry for entry in self.storage.list(self.root) if isinstance(entry, ObjectInfo)]
        yield "area listed"
        old = now() - grace
        removed = 0
        markers = [info for info in objects if info.key.startswith(self.root + "runs/")]
        for info in markers:
            run_id = info.key.rsplit("/", 1)[1]
            if run_exists is not None and info.last_modified < old and not run_exists(run_id):
                self.storage.delete(info.key)
                yield "marker deleted"
                removed += 1
        if removed < len(markers) or not objects or max(info.last_modified for info in objects) > old:
            return CollectReport(markers_removed=removed)
        deleted = yield from self.delete_unreferenced()
        return CollectReport(markers_removed=removed, areas_deleted=int(deleted))
