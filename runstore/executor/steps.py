"""What each kind of step does on an executor, writing what it does to the step's log.

A step function returns the exit code of its command (RUN) or None, and raises
:class:`StepError` when the step fails. With a :class:`TaskUser`, a command runs as that
user (its uid and gid, no other groups, umask 077), and what restores extract is that user's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ServiceError
from runstore.contract.http.client import Download
from runstore.contract.model import ExecutorTask, Step, StepKind
from runstore.errors import InvalidIdError
from runstore.executor.files import ArchiveError, TaskFiles, TaskUser, extract_tar, write_tar
from runstore.ids import check_archive_step, check_id

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL when a running command is stopped
SWEEP_TIMEOUT = 5.0  # seconds that killing a task user's processes may take, per attempt
SWEEP_ATTEMPTS = 3
_POLL = 0.05
_CHUNK = 1 << 16


class StepError(Exception):
    """A step failed; ``exit_code`` is its command's (RUN) if it ran."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class StepLog:
    """A log file that lines are appended to, each written through at once (made with mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, "ab", buffering=0)

    def line(self, text: str) -> None:
        self._file.write(text.encode(errors="replace") + b"\n")

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Cancellation:
    """Stops a task: no further steps, and the running command's process group is killed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._since = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def reason(self) -> str | None:
        """Why the task is stopped, or None if it is not."""
        return self._reason

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            self._since = time.monotonic()
            if self._process is not None:
                _kill_group(self._process, signal.SIGTERM)

    def attach(self, process: subprocess.Popen[bytes] | None) -> None:
        """Make ``process`` the one to kill (None: none); kill it now if already cancelled."""
        with self._lock:
            self._process = process
            if process is not None and self._reason is not None:
                _kill_group(process, signal.SIGTERM)

    def overdue(self) -> bool:
        """Whether a cancelled command had its grace time to end after SIGTERM."""
        return self._reason is not None and time.monotonic() - self._since > KILL_GRACE


@attrs.frozen
class StepContext:
    """What a step works with."""

    task: ExecutorTask
    files: TaskFiles
    client: RunServiceClient
    environment: dict[str, str]
    cancellation: Cancellation
    user: TaskUser | None = None  # None: commands run as the executor's user


StepFunction = Callable[[StepContext, int, Step, StepLog], int | None]


def describe(step: Step) -> str:
    """A step's kind and name, e.g. ``run "build"``."""
    return f'{step.kind.value} "{step.name}"' if step.name else step.kind.value


def run_step(context: StepContext, index: int, step: Step, out: StepLog) -> int | None:
    """Run step ``index`` of the task, logging to ``out``; its exit code (RUN) or None."""
    return _STEPS[step.kind](context, index, step, out)


def _run(context: StepContext, index: int, step: Step, out: StepLog) -> int:
    if not step.command:
        raise StepError("the step has no command")
    out.line(f"$ {step.command}")
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", step.command],
            cwd=context.files.workspace,  # entered before the user switch: its parents need no o+x
            env=context.environment,
            stdin=subprocess.DEVNULL,
            stdout=out.fileno(),  # the step writes its log through this descriptor, not by its path
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **as_user(context.user),
        )
    except (OSError, ValueError) as exc:
        raise StepError(f"cannot start /bin/sh: {exc}") from exc
    context.cancellation.attach(process)
    try:
        status = _wait(process, context.cancellation)
    finally:
        context.cancellation.attach(None)
        if process.returncode is None:  # an error while waiting: leave nothing running
            _kill_group(process, signal.SIGKILL)
            process.wait()
    if status < 0:
        code = 128 - status
        out.line(f"killed by signal {_signal_name(-status)} (exit code {code})")
    else:
        code = status
        out.line(f"exit code {code}")
    reason = context.cancellation.reason
    if reason is not None:
        raise StepError(f"stopped ({reason})", exit_code=code)
    if code != 0:
        raise StepError(f"the command exited with code {code}", exit_code=code)
    return code


def _wait(process: subprocess.Popen[bytes], cancellation: Cancellation) -> int:
    """Wait for ``process`` to exit, kill what is left of its group, reap it; its return code."""
    killed = False
    while not _exited(process):
        if not killed and cancellation.overdue():
            _kill_group(process, signal.SIGKILL)
            killed = True
        time.sleep(_POLL)
    cancellation.attach(None)  # from here on only this thread signals the group
    _kill_group(process, signal.SIGKILL)  # background children that outlive the shell
    return process.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` exited; where possible it stays a zombie, so its group id stays its own."""
    if hasattr(os, "waitid"):
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    return process.poll() is not None


def _kill_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.returncode is not None:
        return  # reaped: the group id may name another group now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def as_user(user: TaskUser | None) -> dict[str, Any]:
    """The ``subprocess.Popen`` options that run a process as ``user`` (none for None)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077}


def kill_processes_of(user: TaskUser) -> bool:
    """SIGKILL every process running as ``user``'s uid; whether that was done.

    A shell running as ``user`` calls ``kill(-1, SIGKILL)``, which the kernel applies to
    all the uid's processes at once (not the shell itself), so none forks in between and
    no pid can be reused meanwhile. Tried ``SWEEP_ATTEMPTS`` times if the shell is killed
    (by a process of the uid doing the same), each for at most ``SWEEP_TIMEOUT`` seconds.
    """
    for _ in range(SWEEP_ATTEMPTS):
        sweeper = subprocess.Popen(
            ["/bin/sh", "-c", "kill -s KILL -- -1"],
            cwd="/",
            env={"PATH": os.defpath},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **as_user(user),
        )
        try:
            code = sweeper.wait(SWEEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            sweeper.kill()
            sweeper.wait()
            continue
        if code >= 0:  # 0: processes were killed; 1: there were none
            return True
    return False


def _save_to_workspace(context: StepContext, index: int, step: Step, out: StepLog) -> None:
    archive = context.files.archive(index)
    out.line(f"archiving {_listing(step.paths)} of the workspace into archive {index}")
    count = _tar(context, step.paths, archive, out)
    out.line(f"archive {index}: {count} entries, {archive.stat().st_size} bytes")
    return None


def _restore_workspace(context: StepContext, index: int, step: Step, out: StepLog) -> None:
    refs = context.task.workspace
    if not refs:
        out.line("no archives to restore")
    for ref in refs:
        try:
            task_id = check_id("task id", ref.task_id)
            archive_step = check_archive_step(ref.step)
        except InvalidIdError as exc:
            raise StepError(f"cannot restore an archive: {exc}") from exc
        out.line(f"restoring the archive of step {archive_step} of task {task_id}")
        download = context.files.tmp / f"restore-{index}.tar"
        try:
            size = _save_stream(context.client.archive(task_id, archive_step), download)
            count = _extract(download, context)
        except ServiceError as exc:
            raise StepError(
                f"cannot fetch the archive of step {archive_step} of task {task_id}: {exc}"
            ) from exc
        finally:
            download.unlink(missing_ok=True)
        out.line(f"extracted {count} entries ({size} bytes)")
    return None


def _save_cache(context: StepContext, index: int, step: Step, out: StepLog) -> None:
    group = _cache_group(context)
    if not step.keys:
        raise StepError("a save_cache step needs a key")
    key = step.keys[0]
    out.line(f"saving {_listing(step.paths)} of the workspace as cache {key!r} of group {group!r}")
    tar = context.files.tmp / f"cache-{index}.tar"
    try:
        count = _tar(context, step.paths, tar, out)
        size = tar.stat().st_size
        with tar.open("rb") as body:
            saved = context.client.save_cache(group, key, body)
    except ServiceError as exc:
        raise StepError(f"cannot upload the cache: {exc}") from exc
    finally:
        tar.unlink(missing_ok=True)
    if saved:
        out.line(f"saved cache {key!r}: {count} entries, {size} bytes")
    else:
        out.line(f"cache {key!r} exists already: kept it (the first writer wins)")
    return None


def _restore_cache(context: StepContext, index: int, step: Step, out: StepLog) -> None:
    group = _cache_group(context)
    if not step.keys:
        raise StepError("a restore_cache step needs at least one key")
    out.line(f"looking for a cache of group {group!r} matching {_listing(step.keys)}")
    download = context.files.tmp / f"cache-{index}.tar"
    try:
        found = context.client.restore_cache(group, list(step.keys))
        if found is None:
            out.line("no cache matched: nothing restored")
            return None
        key = found.key
        size = _save_stream(found.stream, download)
        count = _extract(download, context)
    except ServiceError as exc:
        raise StepError(f"cannot fetch the cache: {exc}") from exc
    finally:
        download.unlink(missing_ok=True)
    out.line(f"restored cache {key!r}: {count} entries, {size} bytes")
    return None


def _tar(context: StepContext, paths: list[str], destination: Path, out: StepLog) -> int:
    try:
        return write_tar(context.files.workspace, paths, destination, out.line, owner=context.user)
    except ArchiveError as exc:
        raise StepError(str(exc)) from exc


def _extract(archive: Path, context: StepContext) -> int:
    try:
        return extract_tar(archive, context.files.workspace, owner=context.user)
    except ArchiveError as exc:
        raise StepError(str(exc)) from exc


def _save_stream(stream: Download, destination: Path) -> int:
    """Write a download to ``destination``; its size."""
    with stream, destination.open("wb") as file:
        while chunk := stream.read(_CHUNK):
            file.write(chunk)
    return stream.received


def _cache_group(context: StepContext) -> str:
    if not context.task.cache_group:
        raise StepError("the task has no cache group")
    return context.task.cache_group


def _listing(items: list[str]) -> str:
    return ", ".join(repr(item) for item in items) if items else "nothing"


_STEPS: dict[StepKind, StepFunction] = {
    StepKind.RUN: _run,
    StepKind.SAVE_TO_WORKSPACE: _save_to_workspace,
    StepKind.RESTORE_WORKSPACE: _restore_workspace,
    StepKind.SAVE_CACHE: _save_cache,
    StepKind.RESTORE_CACHE: _restore_cache,
}
