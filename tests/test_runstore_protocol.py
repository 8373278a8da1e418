"""The deletion protocol, step by step: no interleaving deletes referenced data.

Each operation of the run store is a generator that yields after every storage request.
The state machine starts operations of several runs and deleters, advances any of them
one step at a time, abandons some mid-way (a crash), and after every step checks that
every task a run references still has all its data.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from objstore import AlreadyExistsError
from runstore import RunStore
from runstore.sharing import run_steps
from tests.conftest import StorageFactory

RUNS = [f"r{n}" for n in range(3)]
TASKS = ["t0", "t1"]
MAX_RUNNING = 3  # few operations at once, so that their steps interleave densely


@attrs.define
class Operation:
    """An operation under way: what it is, and its remaining steps."""

    kind: str
    run_id: str
    task_id: str
    steps: Generator[str, None, object]
    steps_done: int = 0


@attrs.define
class Task:
    """What the model knows of a task: the data written so far and whether it is complete."""

    written: list[tuple[str, bytes]] = attrs.field(factory=list)
    created: bool = False  # create_task returned
    finished: bool = False


class ProtocolMachine(RuleBasedStateMachine):
    factory: StorageFactory

    def __init__(self) -> None:
        super().__init__()
        self.store = RunStore(type(self).factory())
        self.tasks: dict[str, Task] = {}
        self.live: set[tuple[str, str]] = set()  # (run, task) references that must hold
        self.running: list[Operation] = []
        self.counts = {"steps": 0, "shared": 0, "refused": 0, "crashes": 0, "deleted": 0}

    def busy(self, run_id: str, task_id: str) -> bool:
        """Whether the run references the task, or an operation of its on the task is under way."""
        return (run_id, task_id) in self.live or any(
            (op.run_id, op.task_id) == (run_id, task_id) for op in self.running
        )

    def creation(self, run_id: str, task_id: str) -> Generator[str, None, object]:
        """create_task, then the task's data, then finish_task: the creating run's steps."""
        yield from self.store.create_task_steps(run_id, task_id)
        self.tasks[task_id].created = True
        for step in ("setup", 0, 1):
            data = f"{task_id} {step}".encode()
            self.store.write_log(task_id, step, data)
            self.tasks[task_id].written.append((f"log {step}", data))
            yield f"log {step} written"
        self.store.write_archive(task_id, 0, b"tar of " + task_id.encode())
        self.tasks[task_id].written.append(("archive 0", b"tar of " + task_id.encode()))
        yield "archive written"
        yield from self.store.finish_task_steps(task_id)
        self.tasks[task_id].finished = True
        return None

    @precondition(lambda self: len(self.running) < MAX_RUNNING)
    @rule(task_id=st.sampled_from(TASKS), run_id=st.sampled_from(RUNS))
    def start_creation(self, task_id: str, run_id: str) -> None:
        if task_id in self.tasks or self.busy(run_id, task_id):
            return  # task ids are never reused
        self.tasks[task_id] = Task()
        self.live.add((run_id, task_id))  # the creator references the task from its first step
        self.running.append(Operation("create", run_id, task_id, self.creation(run_id, task_id)))

    @rule(task_id=st.sampled_from(TASKS), run_id=st.sampled_from(RUNS))
    def create_at_once(self, task_id: str, run_id: str) -> None:
        """A whole creation between two steps of the others."""
        if task_id not in self.tasks and not self.busy(run_id, task_id):
            self.tasks[task_id] = Task()
            self.live.add((run_id, task_id))
            try:
                run_steps(self.creation(run_id, task_id))
            except AlreadyExistsError:
                self.live.discard((run_id, task_id))

    @precondition(lambda self: len(self.running) < MAX_RUNNING)
    @rule(task_id=st.sampled_from(TASKS), run_id=st.sampled_from(RUNS))
    def start_add(self, task_id: str, run_id: str) -> None:
        if task_id not in self.tasks or not self.tasks[task_id].created or self.busy(run_id, task_id):
            return  # restarts reuse tasks that were created; a run references a task at most once
        self.running.append(Operation("add", run_id, task_id, self.store.add_run_steps(run_id, task_id)))

    @precondition(lambda self: self.live and len(self.running) < MAX_RUNNING)
    @rule(data=st.data())
    def start_remove(self, data: st.DataObject) -> None:
        run_id, task_id = data.draw(st.sampled_from(sorted(self.live)))
        if any((op.run_id, op.task_id) == (run_id, task_id) for op in self.running):
            return  # its creation is still under way
        self.live.discard((run_id, task_id))
        self.running.append(
            Operation("remove", run_id, task_id, self.store.remove_run_steps(run_id, task_id))
        )

    @precondition(lambda self: len(self.running) < MAX_RUNNING)
    @rule()
    def start_collect(self) -> None:
        steps = self.store.collect_steps(grace=timedelta(0))
        self.running.append(Operation("collect", "", "", steps))

    @precondition(lambda self: self.running)
    @rule(pick=st.integers(0, MAX_RUNNING - 1), count=st.integers(1, 8))
    def step(self, pick: int, count: int) -> None:
        """Advance one operation by up to ``count`` steps, checking the invariant after each."""
        operation = self.running[pick % len(self.running)]
        for _ in range(count):
            if not self.advance(operation):
                return
            self.referenced_data_is_intact()

    def advance(self, operation: Operation) -> bool:
        """Take one step of ``operation``; whether it has more."""
        self.counts["steps"] += 1
        try:
            next(operation.steps)
        except StopIteration as stop:
            self.running.remove(operation)
            if operation.kind == "add":
                if stop.value:
                    self.live.add((operation.run_id, operation.task_id))
                    self.counts["shared"] += 1
                else:
                    self.counts["refused"] += 1
            return False
        except AlreadyExistsError:
            assert operation.kind == "create"  # a deleter was at work: the creation is refused
            self.running.remove(operation)
            self.live.discard((operation.run_id, operation.task_id))
            return False
        operation.steps_done += 1
        return True

    @precondition(lambda self: self.running)
    @rule(pick=st.integers(0, MAX_RUNNING - 1))
    def crash(self, pick: int) -> None:
        """The process running an operation dies between two steps."""
        operation = self.running.pop(pick % len(self.running))
        self.counts["crashes"] += 1
        if operation.kind == "create":
            self.live.discard((operation.run_id, operation.task_id))  # its run is gone too

    @invariant()
    def referenced_data_is_intact(self) -> None:
        for run_id, task_id in sorted(self.live):
            task = self.tasks[task_id]
            for what, data in task.written:
                kind, step = what.split()
                if kind == "log":
                    with self.store.open_log(task_id, step if step == "setup" else int(step)) as stream:
                        assert stream.read() == data, f"{what} of {task_id} lost while {run_id} references it"
                else:
                    with self.store.open_archive(task_id, int(step)) as stream:
                        assert stream.read() == data, f"{what} of {task_id} lost while {run_id} references it"

    def teardown(self) -> None:
        for operation in list(self.running):
            try:
                result = run_steps(operation.steps)  # type: ignore[arg-type]
            except AlreadyExistsError:
                continue
            if operation.kind == "add" and result:
                self.live.add((operation.run_id, operation.task_id))
        self.referenced_data_is_intact()
        for run_id, task_id in sorted(self.live):
            self.store.remove_run(run_id, task_id)
        report = self.store.collect(grace=timedelta(0), run_exists=lambda run_id: False)
        leftovers = [entry.key for entry in self.store.storage.list()]
        assert leftovers == [], f"collect left {leftovers} ({report})"
        self.store.storage.close()


EXAMPLES = {"memory": 500, "posix": 150, "posixflat": 60, "s3": 25}


@pytest.mark.parametrize("backend", list(EXAMPLES))
def test_no_interleaving_loses_referenced_data(backend: str, make_storage: StorageFactory) -> None:
    machine = type(f"Protocol_{backend}", (ProtocolMachine,), {"factory": staticmethod(make_storage)})
    run_state_machine_as_test(
        machine, settings=settings(max_examples=EXAMPLES[backend], stateful_step_count=80)
    )
