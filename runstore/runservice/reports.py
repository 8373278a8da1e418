"""What an executor reports of a task: checked against the task's steps, then settled.

Pure functions, for the runservice's compare-and-swap changes (no I/O here).
"""

from __future__ import annotations

from datetime import datetime

import attrs

from runstore.contract.errors import BadRequestError
from runstore.contract.model import ExecutorTask, ExecutorTaskPhase, ExecutorTaskStatus, StepState

# The phases of a task or step that has started (and so has a start time).
_STARTED = (
    ExecutorTaskPhase.RUNNING,
    ExecutorTaskPhase.SUCCESS,
    ExecutorTaskPhase.FAILED,
)


def check_report(task: ExecutorTask, status: ExecutorTaskStatus) -> None:
    """``BadRequestError`` naming what does not fit, unless ``status`` fits ``task``.

    A report gives one step state per step, or none (the step states stay as they are); a
    task not started has no step that started; a finished task has no step still running;
    a task that succeeded has only steps that succeeded; nothing ends before it starts.
    """
    states = status.step_states
    if states and len(states) != len(task.steps):
        raise BadRequestError(
            f"task {task.id!r} has {len(task.steps)} step(s): a status report gives as many"
            f" step states or none, not {len(states)}"
        )
    _check_times(f"task {task.id!r}", status.start_time, status.end_time)
    phase = status.phase
    for number, state in enumerate(states):
        step = f"step {number} of task {task.id!r}"
        _check_times(step, state.start_time, state.end_time)
        if phase is ExecutorTaskPhase.NOTSTARTED and state.phase is not ExecutorTaskPhase.NOTSTARTED:
            raise BadRequestError(f"{step} is {state.phase.value}, but the task is {phase.value}")
        if phase.finished and state.phase is ExecutorTaskPhase.RUNNING:
            raise BadRequestError(f"{step} is still running, but the task is {phase.value}")
        if phase is ExecutorTaskPhase.SUCCESS and state.phase is not ExecutorTaskPhase.SUCCESS:
            raise BadRequestError(f"{step} is {state.phase.value}, but the task succeeded")


def _check_times(what: str, start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end < start:
        raise BadRequestError(f"{what} ends ({end.isoformat()}) before it starts ({start.isoformat()})")


def settle_report(task: ExecutorTask, status: ExecutorTaskStatus, received: datetime) -> ExecutorTaskStatus:
    """``status`` (checked) with the times it lacks filled in, ``received`` being when it came.

    Reports may be lost, so a report may be the first the runservice hears of a task or
    step. A task that finished without an end time ended when the report came; a step
    that did ended as known before, else with its task (when the report came, if the task
    goes on). A task or step that started without a start time started as known before,
    else at its end (start = end: its start is unknown), else when the report came; never
    after its end. A report without step states keeps the task's.
    """
    end = status.end_time
    if status.phase.finished and end is None:
        end = received
    start = status.start_time
    if status.phase in _STARTED and start is None:
        start = _start(task.start_time, end, received)
    if status.step_states:
        known = task.step_states
        states = [
            _settle_step(state, known[number] if number < len(known) else StepState(), end or received)
            for number, state in enumerate(status.step_states)
        ]
    else:
        states = list(task.step_states)
    return attrs.evolve(status, start_time=start, end_time=end, step_states=states)


def _settle_step(state: StepState, before: StepState, ended: datetime) -> StepState:
    if state.phase not in _STARTED:
        return state
    end = state.end_time
    if state.phase.finished and end is None:
        end = before.end_time or ended
    start = state.start_time
    if start is None:
        start = _start(before.start_time, end, ended)
    return attrs.evolve(state, start_time=start, end_time=end)


def _start(before: datetime | None, end: datetime | None, received: datetime) -> datetime:
    """The start of a task or step whose report gives none: as known before, else its end
    (start = end: unknown), else when the report came; never after its end."""
    start = before or end or received
    return min(start, end) if end is not None else start
