"""One task on an executor: the thread that runs its steps, and its status reports.

Every change of the task's status (start, each step's start and end, the end) is sent
to the runservice at once; a report that fails is logged, and the executor's loop
sends the latest status again while the runservice's copy differs.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading

import attrs

from runstore.clock import now
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ServiceError
from runstore.contract.model import ExecutorTask, ExecutorTaskPhase, ExecutorTaskStatus, Step, StepState
from runstore.executor.files import TaskFiles
from runstore.executor.steps import Cancellation, StepContext, StepError, StepLog, describe, run_step

log = logging.getLogger(__name__)

RESTARTED = "executor restarted"
STOPPED = "executor stopped"
UNASSIGNED = "the task is no longer assigned to this executor"
ENDED = "the runservice ended the task"


def status_of(task: ExecutorTask) -> ExecutorTaskStatus:
    """The status part of an executor task, as the runservice has it."""
    return ExecutorTaskStatus(
        phase=task.phase,
        start_time=task.start_time,
        end_time=task.end_time,
        step_states=list(task.step_states),
        error=task.error,
    )


def task_environment(task: ExecutorTask, workspace: os.PathLike[str]) -> dict[str, str]:
    """The minimal base environment (PATH, HOME = the workspace, LANG) under the task's own."""
    base = {"PATH": os.environ.get("PATH") or os.defpath, "HOME": os.fspath(workspace), "LANG": "C.UTF-8"}
    return {**base, **task.environment}


class TaskRunner:
    """Runs one executor task's steps in a thread of its own, reporting each change."""

    def __init__(
        self, task: ExecutorTask, files: TaskFiles, client: RunServiceClient, executor_id: str
    ) -> None:
        self.task = task
        self.files = files
        self._client = client
        self._executor_id = executor_id
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._status = ExecutorTaskStatus(
            phase=ExecutorTaskPhase.RUNNING,
            start_time=now(),
            step_states=[StepState() for _ in task.steps],
        )
        self._cancellation = Cancellation()
        self._withdrawn = False  # guarded by _lock
        self._thread = threading.Thread(target=self._main, name=f"task-{task.id}", daemon=True)

    @property
    def status(self) -> ExecutorTaskStatus:
        with self._lock:
            return self._status

    @property
    def alive(self) -> bool:
        """Whether the task's thread still runs (it ends after the final report)."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def cancel(self, reason: str) -> None:
        """Run no further steps, and kill the running command's process group."""
        self._cancellation.cancel(reason)

    def withdraw(self, reason: str) -> bool:
        """Cancel the task and send no further report of it; whether it was not withdrawn yet.

        For a task the runservice no longer has running here: unassigned, or ended by it.
        """
        with self._lock:
            if self._withdrawn:
                return False
            self._withdrawn = True
        self._cancellation.cancel(reason)
        return True

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def report(self) -> bool:
        """Send the latest status to the runservice (none once withdrawn); whether it was accepted."""
        with self._send_lock:
            with self._lock:
                if self._withdrawn:
                    return False
                status = self._status
            try:
                self._client.task_status(self.task.id, status)
            except ServiceError as exc:
                log.warning(
                    "task %s: reporting its status (%s) failed: %s", self.task.id, status.phase.value, exc
                )
                return False
            return True

    def _main(self) -> None:
        try:
            self.report()
            error = self._prepare()
            for index, step in enumerate(self.task.steps):
                if error:
                    break
                if self._cancellation.reason is not None:
                    error = self._cancellation.reason
                    break
                error = self._step(index, step)
            if error and self._cancellation.reason is not None:
                error = self._cancellation.reason
        except Exception as exc:  # a bug: the task fails, and the runservice hears of it
            log.exception("task %s: internal error", self.task.id)
            error = f"internal error of the executor: {exc}"
        phase = ExecutorTaskPhase.FAILED if error else ExecutorTaskPhase.SUCCESS
        with self._lock:
            self._status = attrs.evolve(self._status, phase=phase, end_time=now(), error=error)
        self.report()

    def _prepare(self) -> str:
        """Make the task's folders and write the setup log; an error message if that failed."""
        task = self.task
        try:
            leftovers = self.files.root.exists()
            if leftovers:
                shutil.rmtree(self.files.root)
            self.files.create()
            with StepLog(self.files.setup_log) as out:
                out.line(
                    f"executor {self._executor_id}: task {task.id} ({task.task_name}) of run {task.run_id}"
                )
                if leftovers:
                    out.line("removed the files of an earlier attempt at this task")
                out.line(f"workspace: {self.files.workspace}")
                names = ", ".join(sorted(task.environment)) or "none"
                out.line(f"environment: PATH, HOME (the workspace), LANG; the task's: {names}")
                if task.cache_group:
                    out.line(f"cache group: {task.cache_group}")
                for index, step in enumerate(task.steps):
                    out.line(f"step {index}: {describe(step)}")
                out.line("ready")
        except OSError as exc:
            log.warning("task %s: preparing failed: %s", task.id, exc)
            return f"preparing the task failed: {exc}"
        return ""

    def _step(self, index: int, step: Step) -> str:
        """Run one step, reporting its start and end; an error message if it failed."""
        start = now()
        self._set_step(index, StepState(ExecutorTaskPhase.RUNNING, start_time=start))
        context = StepContext(
            task=self.task,
            files=self.files,
            client=self._client,
            environment=task_environment(self.task, self.files.workspace),
            cancellation=self._cancellation,
        )
        exit_code: int | None = None
        error = ""
        try:
            with StepLog(self.files.step_log(index)) as out:
                out.line(f"step {index}: {describe(step)}")
                try:
                    exit_code = run_step(context, index, step, out)
                except StepError as exc:
                    exit_code = exc.exit_code
                    error = exc.message
                except Exception as exc:  # an OS error or a bug: this step fails, not the executor
                    log.exception("task %s: step %d failed", self.task.id, index)
                    error = f"internal error of the executor: {exc}"
                out.line(f"step failed: {error}" if error else "step succeeded")
        except OSError as exc:
            error = f"cannot write the step's log: {exc}"
        phase = ExecutorTaskPhase.FAILED if error else ExecutorTaskPhase.SUCCESS
        self._set_step(index, StepState(phase, start_time=start, end_time=now(), exit_code=exit_code))
        return f"step {index} ({describe(step)}) failed: {error}" if error else ""

    def _set_step(self, index: int, state: StepState) -> None:
        with self._lock:
            states = list(self._status.step_states)
            states[index] = state
            self._status = attrs.evolve(self._status, step_states=states)
        self.report()
