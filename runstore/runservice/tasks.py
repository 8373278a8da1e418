"""Pure functions on run documents: transitions, new tasks, task order, pending fetches."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Literal

import attrs

from runstore.clock import now
from runstore.contract.model import (
    ArchiveRef,
    ExecutorTaskPhase,
    FetchPhase,
    Run,
    RunTask,
    Step,
    StepKind,
    StepState,
)
from runstore.store import RunStore

# The phases an executor-task phase may follow; a run task's status follows the same rule
# (a TaskStatus has the value of the ExecutorTaskPhase it mirrors). A final phase follows
# any unfinished one: the executor's final report settles a task whose earlier reports
# were lost (a short task's ``running`` among them).
_ALLOWED_FROM: dict[ExecutorTaskPhase, tuple[ExecutorTaskPhase, ...]] = {
    ExecutorTaskPhase.RUNNING: (ExecutorTaskPhase.NOTSTARTED,),
    ExecutorTaskPhase.SUCCESS: (ExecutorTaskPhase.NOTSTARTED, ExecutorTaskPhase.RUNNING),
    ExecutorTaskPhase.FAILED: (ExecutorTaskPhase.NOTSTARTED, ExecutorTaskPhase.RUNNING),
}


def allowed(current: ExecutorTaskPhase, new: ExecutorTaskPhase) -> bool:
    """Whether a task in phase ``current`` may move to ``new``."""
    return current in _ALLOWED_FROM.get(new, ())


def new_id(prefix: str) -> str:
    return f"{prefix}{now():%Y%m%d%H%M%S}-{secrets.token_hex(4)}"


def fresh_task(name: str, steps: list[Step], depends: list[str], environment: dict[str, str]) -> RunTask:
    return RunTask(
        id=new_id("task-"),
        name=name,
        steps=steps,
        depends=depends,
        environment=environment,
        step_states=[StepState() for _ in steps],
        step_log_fetch=[FetchPhase.NOTSTARTED for _ in steps],
        archive_fetch={
            str(number): FetchPhase.NOTSTARTED
            for number, step in enumerate(steps)
            if step.kind is StepKind.SAVE_TO_WORKSPACE
        },
    )


@attrs.frozen
class Fetch:
    """A log or archive of a finished task left to fetch from its executor."""

    kind: Literal["log", "archive"]
    step: int | str  # a step number, or "setup" for the setup log
    never_made: bool  # the step never ran, or failed before its archive
    write: Callable[[BinaryIO], None]  # stores it in the run store
    record: Callable[[FetchPhase, RunTask], RunTask]  # the task with the fetch's outcome


def pending_fetches(task: RunTask, store: RunStore) -> list[Fetch]:
    """What is left to fetch of a task, setup log first, then step logs, then archives."""

    def setup_phase(phase: FetchPhase, task: RunTask) -> RunTask:
        return attrs.evolve(task, setup_log_fetch=phase)

    def log_phase(number: int, phase: FetchPhase, task: RunTask) -> RunTask:
        phases = list(task.step_log_fetch)
        phases[number] = phase
        return attrs.evolve(task, step_log_fetch=phases)

    def archive_phase(step: str, phase: FetchPhase, task: RunTask) -> RunTask:
        return attrs.evolve(task, archive_fetch={**task.archive_fetch, step: phase})

    fetches: list[Fetch] = []
    if task.setup_log_fetch is FetchPhase.NOTSTARTED:
        write = functools.partial(store.write_log, task.id, "setup")
        fetches.append(Fetch("log", "setup", False, write, setup_phase))
    for number, state in enumerate(task.step_states):
        if task.step_log_fetch[number] is FetchPhase.NOTSTARTED:
            never_ran = state.phase is ExecutorTaskPhase.NOTSTARTED
            write = functools.partial(store.write_log, task.id, number)
            fetches.append(Fetch("log", number, never_ran, write, functools.partial(log_phase, number)))
    for step, phase in task.archive_fetch.items():
        if phase is FetchPhase.NOTSTARTED:
            number = int(step)
            missing = task.step_states[number].phase is not ExecutorTaskPhase.SUCCESS
            write = functools.partial(store.write_archive, task.id, number)
            fetches.append(Fetch("archive", number, missing, write, functools.partial(archive_phase, step)))
    return fetches


def _parents_first(by_name: dict[str, RunTask], roots: Iterable[RunTask]) -> list[RunTask]:
    """``roots`` and every task they depend on, each once and after its parents.

    An iterative depth-first walk that reads each task's ``depends`` once: linear in tasks
    plus dependencies, at any depth. The parents of a task come in ``depends`` order.
    """
    order: list[RunTask] = []
    seen: set[str] = set()
    for root in roots:
        if root.name in seen:
            continue
        seen.add(root.name)
        stack: list[tuple[RunTask, Iterator[str]]] = [(root, iter(root.depends))]
        while stack:
            task, parents = stack[-1]
            for name in parents:
                if name not in seen:
                    seen.add(name)
                    parent = by_name[name]
                    stack.append((parent, iter(parent.depends)))
                    break
            else:
                stack.pop()
                order.append(task)
    return order


def parents_first(run: Run) -> list[RunTask]:
    """The run's tasks, each after the tasks it depends on; linear in tasks plus dependencies."""
    return _parents_first({task.name: task for task in run.tasks}, run.tasks)


def ancestors(run: Run, task: RunTask) -> list[RunTask]:
    """The tasks ``task`` depends on, directly or not, each once, parents' ancestors first.

    Linear in tasks plus dependencies.
    """
    return _parents_first({each.name: each for each in run.tasks}, [task])[:-1]


def workspace_of(run: Run, task: RunTask) -> list[ArchiveRef]:
    """The archives a task restores: those of its ancestors, parents' ancestors first."""
    return [
        ArchiveRef(ancestor.id, number)
        for ancestor in ancestors(run, task)
        for number, step in enumerate(ancestor.steps)
        if step.kind is StepKind.SAVE_TO_WORKSPACE
    ]


def find_task(run: Run, task_id: str) -> RunTask | None:
    for task in run.tasks:
        if task.id == task_id:
            return task
    return None


def replace_task(run: Run, task: RunTask | None) -> Run:
    assert task is not None
    return attrs.evolve(run, tasks=[task if t.id == task.id else t for t in run.tasks])
