"""Every interleaving of the deletion protocol's steps, for small scenarios on one area.

The protocol's unit is one :class:`SharedArea` (one task's logs, or its archives). For
two operations every interleaving of their steps is run (replayed from the start for each
schedule); for three or more, random schedules are sampled, with crashes. After every
step, the data of every task a run references must be whole; at the end, the markers
must be exactly those of the live references, and once none remains, ``collect`` must
leave nothing behind.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from datetime import timedelta

import attrs
import pytest

from objstore import AlreadyExistsError, MemoryStorage
from runstore.sharing import SharedArea, Steps, run_steps

ROOT = "logs/t/"
DATA = {"setup.log": b"cloning", "steps/0.log": b"42 passed"}


class Violation(AssertionError):
    """The protocol lost referenced data, shared incomplete data, or leaked."""


@attrs.frozen
class Scenario:
    """Runs that reference the finished task at first, and the operations to interleave."""

    name: str
    referenced_by: tuple[str, ...]
    operations: tuple[tuple[str, str], ...]  # (kind, run): add, remove, collect or create


SCENARIOS = [
    Scenario("restart during the last delete", ("r0",), (("remove", "r0"), ("add", "r1"))),
    Scenario("restart during a delete", ("r0", "r1"), (("remove", "r0"), ("add", "r2"))),
    Scenario("two last deletes", ("r0", "r1"), (("remove", "r0"), ("remove", "r1"))),
    Scenario("restart during collect", (), (("collect", ""), ("add", "r1"))),
    Scenario("collect during a delete", ("r0",), (("remove", "r0"), ("collect", ""))),
    Scenario("restart during creation", (), (("create", "r0"), ("add", "r1"))),
    Scenario("collect during creation", (), (("create", "r0"), ("collect", ""))),
]
WIDE_SCENARIOS = [
    Scenario("restarts and deletes", ("r0", "r1"), (("remove", "r0"), ("add", "r2"), ("remove", "r1"))),
    Scenario(
        "everything at once",
        ("r0",),
        (("remove", "r0"), ("add", "r1"), ("add", "r2"), ("collect", "")),
    ),
    Scenario("creation, restart, collect", (), (("create", "r0"), ("add", "r1"), ("collect", ""))),
]


class Run:
    """One replay of a scenario under a schedule, checking the invariants as it goes."""

    def __init__(self, scenario: Scenario, area_type: type[SharedArea]) -> None:
        self.area = area_type(MemoryStorage(), ROOT)
        self.live: set[str] = set(scenario.referenced_by)
        self.finished = bool(scenario.referenced_by)
        self.written: dict[str, bytes] = {}
        if scenario.referenced_by:
            first, *others = scenario.referenced_by
            run_steps(self.area.create(first))
            for name, data in DATA.items():
                self.area.storage.write(self.area.data_key(name), data)
                self.written[name] = data
            run_steps(self.area.finish())
            for run_id in others:
                assert run_steps(self.area.add(run_id))
        elif not any(kind == "create" for kind, _ in scenario.operations):
            # a crashed deleter left the whole task unreferenced
            for name, data in DATA.items():
                self.area.storage.write(self.area.data_key(name), data)
                self.written[name] = data
            run_steps(self.area.finish())
            self.finished = True
        self.operations = [self.start(kind, run_id) for kind, run_id in scenario.operations]
        self.runs = [run_id for _, run_id in scenario.operations]
        self.done = [False] * len(self.operations)

    def start(self, kind: str, run_id: str) -> Generator[str, None, object]:
        if kind == "add":
            return self.adding(run_id)
        if kind == "remove":
            self.live.discard(run_id)
            return self.area.remove(run_id)
        if kind == "collect":
            return self.area.collect(grace=timedelta(0))
        self.live.add(run_id)
        return self.creating(run_id)

    def adding(self, run_id: str) -> Steps[bool]:
        added = yield from self.area.add(run_id)
        if added:
            if not self.finished:
                raise Violation(f"{run_id} shares incomplete data")
            self.live.add(run_id)
        return added

    def creating(self, run_id: str) -> Steps[None]:
        yield from self.area.create(run_id)
        for name, data in DATA.items():
            self.area.storage.write(self.area.data_key(name), data)
            self.written[name] = data
            yield f"{name} written"
        for step in self.area.finish():
            self.finished = True  # the sentinel is written
            yield step

    def step(self, index: int) -> None:
        try:
            next(self.operations[index])
        except StopIteration:
            self.done[index] = True
        except AlreadyExistsError:
            # a creation refused (another run's marker came first): its run gives up
            self.done[index] = True
            self.live.discard(self.runs[index])
        self.check_data()

    def check_data(self) -> None:
        if not self.live:
            return
        for name, data in self.written.items():
            try:
                stored = self.area.storage.read_bytes(self.area.data_key(name))
            except FileNotFoundError:
                raise Violation(f"{name} deleted while {sorted(self.live)} reference it") from None
            if stored != data:
                raise Violation(f"{name} changed")

    def check_end(self) -> None:
        """Once every operation is over: no stray marker, and no data without a reference."""
        markers = {info.key.rsplit("/", 1)[1] for info in self.area.storage.list(ROOT + "runs/")}
        if markers != self.live:
            raise Violation(f"markers {sorted(markers)} but live references {sorted(self.live)}")
        for run_id in sorted(self.live):
            run_steps(self.area.remove(run_id))
        leftovers = [entry.key for entry in self.area.storage.list()]
        if leftovers:
            raise Violation(f"left behind once no run references the task: {leftovers}")


def all_schedules(scenario: Scenario, area_type: type[SharedArea]) -> int:
    """Run every interleaving of the scenario's operations; the number of schedules."""
    leaves = 0
    pending: list[list[int]] = [[]]
    while pending:
        schedule = pending.pop()
        run = replay(scenario, area_type, schedule)
        unfinished = [index for index, done in enumerate(run.done) if not done]
        if not unfinished:
            run.check_end()
            leaves += 1
        pending.extend([*schedule, index] for index in unfinished)
    return leaves


def replay(scenario: Scenario, area_type: type[SharedArea], schedule: list[int]) -> Run:
    run = Run(scenario, area_type)
    for index in schedule:
        run.step(index)
    return run


def random_schedules(scenario: Scenario, area_type: type[SharedArea], count: int, seed: int) -> int:
    """Run ``count`` random interleavings; some operations crash (stop) at a random step."""
    chooser = random.Random(seed)
    for _ in range(count):
        run = Run(scenario, area_type)
        crash_after = {
            index: chooser.randrange(1, 12)
            for index in range(len(run.operations))
            if chooser.random() < 0.2 and scenario.operations[index][0] != "create"
        }
        taken = [0] * len(run.operations)
        while True:
            open_ops = [
                index
                for index, done in enumerate(run.done)
                if not done and taken[index] < crash_after.get(index, 10**9)
            ]
            if not open_ops:
                break
            index = chooser.choice(open_ops)
            run.step(index)
            taken[index] += 1
        crashed = {scenario.operations[index][1] for index in crash_after if not run.done[index]}
        # The runs of crashed operations are gone: collect may remove their markers.
        run.live -= crashed
        run_steps(
            run.area.collect(grace=timedelta(0), run_exists=lambda run_id, alive=run.live: run_id in alive)
        )
        run.check_data()
        run.check_end()
    return count


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_interleaving_is_safe(scenario: Scenario) -> None:
    count = all_schedules(scenario, SharedArea)
    assert count > 1
    print(f"{scenario.name}: {count} interleavings")


@pytest.mark.parametrize("scenario", WIDE_SCENARIOS, ids=[s.name for s in WIDE_SCENARIOS])
def test_random_interleavings_with_crashes_are_safe(scenario: Scenario) -> None:
    print(f"{scenario.name}: {random_schedules(scenario, SharedArea, 3000, seed=7)} random interleavings")


# -- the checker catches broken protocols ------------------------------------------


class AddWithoutTombstoneCheck(SharedArea):
    def _any(self, folder: str) -> bool:
        return False if folder == "tombstones/" else super()._any(folder)


class AddWithoutSentinelCheck(SharedArea):
    def add(self, run_id: str) -> Steps[bool]:
        self.storage.write(self.marker_key(run_id), b"")
        yield "marker written"
        return True


class DeleterReadsBeforeWriting(SharedArea):
    def delete_unreferenced(self) -> Steps[bool]:
        referenced = self._any("runs/")
        yield "markers listed"
        if referenced:
            return False
        self.storage.write(f"{self.root}tombstones/x", b"")
        yield "tombstone written"
        self.storage.delete(self.sentinel_key)
        yield "sentinel deleted"
        self.storage.delete_many(list(self.storage.list_keys(f"{self.root}data/")))
        yield "data deleted"
        self.storage.delete_many(list(self.storage.list_keys(f"{self.root}tombstones/")))
        return True


class RemoveMarkerLast(SharedArea):
    def remove(self, run_id: str) -> Steps[bool]:
        deleted = yield from self.delete_unreferenced()
        self.storage.delete(self.marker_key(run_id))
        return deleted


BROKEN: list[tuple[type[SharedArea], str]] = [
    (AddWithoutTombstoneCheck, "restart during the last delete"),
    (AddWithoutSentinelCheck, "restart during creation"),
    (DeleterReadsBeforeWriting, "restart during the last delete"),
    (RemoveMarkerLast, "two last deletes"),
]


@pytest.mark.parametrize(("area_type", "scenario_name"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_broken_protocols_are_caught(area_type: type[SharedArea], scenario_name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    with pytest.raises(Violation):
        all_schedules(scenario, area_type)


def test_checker_runs_real_steps() -> None:
    """A sanity check of the harness: one schedule, by hand."""
    run = Run(SCENARIOS[0], SharedArea)
    step: Callable[[int], None] = run.step
    while not all(run.done):
        step(0 if not run.done[0] else 1)
    run.check_end()
    assert run.live == {"r1"} or run.live == set()
