"""One task on an executor: the thread that runs its steps, and its status reports.

Every change of the task's status (start, each step's start and end, the end) is sent
to the runservice at once; a report that fails is logged, and the executor's loop
sends the latest status again while the runservice's copy differs.

A task given a :class:`TaskUser` (one of :class:`TaskUsers`) runs its steps as that user,
and when it ends, every process still running as that user is killed.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading

import attrs

from runstore.clock import now
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError, ServiceError
from runstore.contract.model import ExecutorTask, ExecutorTaskPhase, ExecutorTaskStatus, Step, StepState
from runstore.executor.files import TaskFiles, TaskUser
from runstore.executor.steps import (
    Cancellation,
    StepContext,
    StepError,
    StepLog,
    describe,
    kill_processes_of,
    run_step,
)

log = logging.getLogger(__name__)

RESTARTED = "executor restarted"
STOPPED = "executor stopped"
UNASSIGNED = "the task is no longer assigned to this executor"
ENDED = "the runservice ended the task"

DEFAULT_TASK_UIDS = range(200_000, 300_000)  # the uids tasks run as by default: bare numbers, no accounts
_MAX_UID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


def check_task_uids(uids: range) -> range:
    """``uids`` if it is a non-empty range of step 1 within 1 .. 2**32 - 2, else ``ValueError``."""
    if uids.step != 1 or not uids or uids.start < 1 or uids[-1] > _MAX_UID:
        raise ValueError(f"task uids are FIRST-LAST with 1 <= FIRST <= LAST <= {_MAX_UID}, not {uids}")
    return uids


def has_account(uid: int) -> bool:
    """Whether ``uid`` is a user, or its number a group, of the system's databases (passwd, group)."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        except OverflowError:
            return True  # not a uid this system can name: not one to hand out
        return True
    return False


class TaskUsers:
    """Hands out the uids of ``uids`` to tasks: one a task, never the same to two at once.

    A task holds its uid until :meth:`release` (once its folder is gone). Uids are taken
    in turn through the range, after the last one handed out, so a released uid comes
    back only once the others had their turn; uids that are accounts (:func:`has_account`)
    are skipped, and so are uids that another executor on the machine holds: each held uid
    is claimed machine-wide (:func:`claim_uid`).
    """

    def __init__(self, uids: range) -> None:
        self.uids = check_task_uids(uids)
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # task id -> uid
        self._claims: dict[int, socket.socket] = {}  # uid -> its claim, for the uids claimed here
        self._next = 0  # index in uids where the next search starts

    def held(self) -> dict[str, int]:
        """The uid each task holds."""
        with self._lock:
            return dict(self._held)

    def adopt(self, task_id: str, uid: int) -> None:
        """Count ``uid`` as held by ``task_id`` (found owning its folder), if in the range.

        If another executor holds it too, it stays held here unclaimed: never handed out
        again, and its processes never killed from here.
        """
        if uid not in self.uids:
            return
        with self._lock:
            if task_id in self._held:
                return
            self._held[task_id] = uid
            if uid not in self._claims:
                claim = claim_uid(uid)
                if claim is None:
                    log.warning("task %s: its uid %d is held by another executor too", task_id, uid)
                else:
                    self._claims[uid] = claim

    def acquire(self, task_id: str) -> TaskUser | None:
        """The uid of ``task_id``: the one it holds, else a free one (None if none is left)."""
        with self._lock:
            if task_id in self._held:
                return TaskUser(self._held[task_id])
            taken = set(self._held.values())
            for offset in range(len(self.uids)):
                index = (self._next + offset) % len(self.uids)
                uid = self.uids[index]
                if uid in taken or has_account(uid):
                    continue
                claim = claim_uid(uid)
                if claim is None:
                    continue
                self._held[task_id] = uid
                self._claims[uid] = claim
                self._next = (index + 1) % len(self.uids)
                return TaskUser(uid)
            return None

    def release(self, task_id: str) -> None:
        """Free the uid ``task_id`` holds, once every process left running as it is killed."""
        with self._lock:
            uid = self._held.pop(task_id, None)
            if uid is None or uid in self._held.values():
                return  # an adopted uid that another folder holds as well stays held
            claim = self._claims.pop(uid, None)
        if claim is None:
            return  # another executor's too: not this one's to kill, nor to hand out
        try:
            sweep(TaskUser(uid), f"task {task_id}")  # still claimed: no other task has it yet
        finally:
            claim.close()

    def close(self) -> None:
        """Give up every claim (the uids stay held here)."""
        with self._lock:
            claims = list(self._claims.values())
            self._claims.clear()
        for claim in claims:
            claim.close()


def claim_uid(uid: int) -> socket.socket | None:
    """A machine-wide claim of ``uid``, or None if another process holds it.

    The claim is an abstract Unix socket named ``runstore-task-uid-<uid>`` (in the network
    namespace): no file, and gone when closed or when the process ends, however it ends.
    """
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        claim.bind(f"\0runstore-task-uid-{uid}")
    except OSError as exc:
        claim.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return claim


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
    """Runs one executor task's steps in a thread of its own, reporting each change.

    With ``user``, its steps run as that user, its workspace is that user's, and what is
    left running as that user when the task ends is killed.
    """

    def __init__(
        self,
        task: ExecutorTask,
        files: TaskFiles,
        client: RunServiceClient,
        executor_id: str,
        user: TaskUser | None = None,
    ) -> None:
        self.task = task
        self.files = files
        self.user = user
        self._client = client
        self._executor_id = executor_id
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._delivered: ExecutorTaskStatus | None = None  # the status the runservice last accepted
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

    @property
    def undelivered(self) -> bool:
        """Whether the latest status is not known to be the runservice's."""
        with self._lock:
            return self._status != self._delivered

    def forget_delivery(self) -> None:
        """Count nothing as delivered (the runservice changed hands: it may have lost a report)."""
        with self._lock:
            self._delivered = None

    def report(self) -> bool:
        """Send the latest status to the runservice (none once withdrawn); whether it was accepted.

        A task the runservice no longer has (fetched, or its run deleted) needs no report.
        """
        with self._send_lock:
            with self._lock:
                if self._withdrawn:
                    return False
                status = self._status
            try:
                self._client.task_status(self.task.id, status)
            except RemoteServiceError as exc:
                if exc.kind is not ErrorKind.NOT_EXIST:
                    return self._failed(status, exc)
                log.debug("task %s: the runservice no longer has it", self.task.id)
            except ServiceError as exc:
                return self._failed(status, exc)
            with self._lock:
                self._delivered = status
            return True

    def _failed(self, status: ExecutorTaskStatus, exc: ServiceError) -> bool:
        log.warning("task %s: reporting its status (%s) failed: %s", self.task.id, status.phase.value, exc)
        return False

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
        if self.user is not None:
            sweep(self.user, f"task {self.task.id}")
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
            self.files.create(self.user)
            with StepLog(self.files.setup_log) as out:
                out.line(
                    f"executor {self._executor_id}: task {task.id} ({task.task_name}) of run {task.run_id}"
                )
                if leftovers:
                    out.line("removed the files of an earlier attempt at this task")
                out.line(f"workspace: {self.files.workspace}")
                if self.user is None:
                    out.line("user: the executor's own, shared with its other tasks")
                else:
                    out.line(
                        f"user: uid {self.user.uid}, gid {self.user.gid}, no other groups (this task's own)"
                    )
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
            user=self.user,
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


def sweep(user: TaskUser, what: str) -> None:
    """Kill what runs as ``user`` (:func:`kill_processes_of`), logging a failure as ``what``'s."""
    try:
        done = kill_processes_of(user)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s: cannot kill the processes of uid %d: %s", what, user.uid, exc)
        return
    if not done:
        log.warning("%s: the processes of uid %d may not all be killed", what, user.uid)
