"""The executor: runs the tasks the runservice assigns it, and serves their logs and archives.

Its loop (:meth:`Executor.run_once`) registers the executor with the runservice (again
when its record is missing or what it reports changed), long-polls its assigned tasks
(the runservice answers once they change, or after a bound), starts those not started (never more
running than ``active_tasks_limit``), sends a task's latest status again while the
runservice's copy differs, marks failed the tasks the runservice has running that no
thread here runs (they ran before a restart), stops the tasks that still run here but
are no longer assigned or that the runservice ended (e.g. failed: "executor deleted"),
and deletes the folders of tasks no longer assigned once they are not running. While a
task's status here differs from the runservice's copy, or after a failure (``interval``
seconds later), it asks without waiting. Files are laid out as :mod:`runstore.executor.files` says.

Stopping a task kills its running command's process group: SIGTERM, then SIGKILL after
``KILL_GRACE`` seconds (:mod:`runstore.executor.steps`). :meth:`Executor.stop`
(and SIGTERM or SIGINT of the command line, :mod:`runstore.executor.cli`) stops every
task first, before anything else.

Run as root, it runs each task's steps as a uid of its own (``task_uids``, held while
the task's folder exists), so that tasks cannot read each other's environment or
workspace; not root, it runs one task at a time, unless ``shared_user`` lets all tasks
share its user (:func:`task_isolation`; docs/runservice.md, "Task isolation").

Run it with ``python -m runstore executor --runservice URL --data DIR --id ID``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from runstore.clock import now
from runstore.contract.auth import Tokens
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError, ServiceError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import ExecutorStatus, ExecutorTask, ExecutorTaskPhase
from runstore.errors import InvalidIdError
from runstore.executor.app import ExecutorApp
from runstore.executor.files import TaskFiles
from runstore.executor.steps import StepLog
from runstore.executor.task import (
    DEFAULT_TASK_UIDS,
    ENDED,
    RESTARTED,
    STOPPED,
    UNASSIGNED,
    TaskRunner,
    TaskUsers,
    check_task_uids,
    status_of,
)
from runstore.ids import check_id

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0  # seconds that stop() waits for the stopped tasks' final reports
POLL_WAIT = 25.0
"""Seconds a long poll for tasks may wait for a change (the runservice may answer sooner)."""


@attrs.frozen
class TaskIsolation:
    """How an executor runs its tasks' steps (:func:`task_isolation` decides)."""

    own_users: bool  # each task as a uid of its own; else all as the executor's user
    active_tasks_limit: int  # the tasks it runs at once
    warning: str  # what it says at start ("": nothing)


def task_isolation(*, is_root: bool, shared_user: bool, active_tasks_limit: int) -> TaskIsolation:
    """Each task as a uid of its own if root and not ``shared_user``; else all tasks as the executor's
    user, one at a time unless ``shared_user``.
    """
    if shared_user:
        who = "root" if is_root else "the executor's user"
        return TaskIsolation(
            False,
            active_tasks_limit,
            f"shared user (--shared-user): every task runs as {who}, so tasks can read each other's "
            "environment and workspace, and the executor's",
        )
    if is_root:
        return TaskIsolation(True, active_tasks_limit, "")
    than = "" if active_tasks_limit == 1 else f" (not {active_tasks_limit})"
    return TaskIsolation(
        False,
        1,
        "not running as root, so tasks cannot run as users of their own: running one task at a "
        f"time{than}; --shared-user runs {active_tasks_limit} at once, all as this user, not isolated",
    )


def mapped(ids: range, map_file: str | Path) -> bool:
    """Whether every id of ``ids`` is mapped in this user namespace by ``map_file`` (True if there is none).

    ``map_file`` is ``/proc/self/uid_map`` or ``gid_map``: lines of ``inside outside count``.
    """
    try:
        lines = Path(map_file).read_text().splitlines()
    except FileNotFoundError:
        return True
    spans: list[tuple[int, int]] = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3:
            spans.append((int(fields[0]), int(fields[0]) + int(fields[2])))
    covered = ids.start  # every id below this one is mapped
    for start, end in sorted(spans):
        if start > covered:
            break
        covered = max(covered, end)
    return covered >= ids.stop


def check_advertise_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host (no user, query or fragment), else ``ValueError``."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid or any(char in url for char in "@?#") or any(char.isspace() for char in url):
        raise ValueError(f"an advertise URL is http(s)://host[:port][/path], not {url!r}")
    return url


class Executor:
    """An executor with the id ``executor_id``, keeping its tasks' files under ``data_dir``.

    It reports ``advertise_url`` to the runservice as where to fetch its files (the URL of
    its bound address if None): a URL that reaches it from the runservice's host. As root,
    it runs each task as a uid of ``task_uids`` (uids without accounts, not shared with
    another executor on the machine); ``shared_user`` runs every task as its own user
    (:func:`task_isolation`, :attr:`isolation`).
    """

    def __init__(
        self,
        runservice_url: str,
        data_dir: str | Path,
        *,
        executor_id: str,
        active_tasks_limit: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
        interval: float = 0.5,
        advertise_url: str | None = None,
        shared_user: bool = False,
        task_uids: range = DEFAULT_TASK_UIDS,
        token: str | None = None,
        runservice_tokens: Tokens | None = None,
    ) -> None:
        self.id = check_id("executor id", executor_id)
        self.advertise_url = None if advertise_url is None else check_advertise_url(advertise_url)
        if active_tasks_limit < 1:
            raise ValueError(f"active_tasks_limit is at least 1, not {active_tasks_limit}")
        if interval <= 0:
            raise ValueError(f"interval is over 0, not {interval}")
        self.isolation = task_isolation(
            is_root=os.geteuid() == 0, shared_user=shared_user, active_tasks_limit=active_tasks_limit
        )
        self.active_tasks_limit = self.isolation.active_tasks_limit
        self.interval = interval
        self.tasks_dir = Path(data_dir) / "tasks"
        self._users: TaskUsers | None = None
        check_task_uids(task_uids)
        if self.isolation.own_users:
            for kind in ("uid", "gid"):
                if not mapped(task_uids, f"/proc/self/{kind}_map"):
                    raise ValueError(
                        f"task uids {task_uids.start}-{task_uids[-1]} are not all mapped {kind}s here"
                    )
            self._users = TaskUsers(task_uids)
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        if self._users is not None:
            self.tasks_dir.chmod(0o711)  # task users may pass, not list the tasks
            self._adopt_folders(self._users)
        # a connection for each task's reports, and the loop's
        self._client = RunServiceClient(runservice_url, token=token, connections=self.active_tasks_limit + 2)
        if runservice_tokens is None:
            log.warning("executor %s: its API takes no tokens: anyone may read its tasks' files", self.id)
        self._server = ServerThread(ExecutorApp(self.tasks_dir, tokens=runservice_tokens), host, port)
        self._runners: dict[str, TaskRunner] = {}
        self._orphans_noted: set[str] = set()
        self._waiting_for_uids: set[str] = set()  # tasks told to wait for a free uid
        self._lock = threading.Lock()  # one run_once at a time
        self._reported: ExecutorStatus | None = None  # what the runservice was last told of this executor
        self._version = ""  # the version of the assigned tasks last received
        self._copies: dict[str, ExecutorTask] = {}  # the runservice's copies of the tasks, as last received
        self._polling = threading.Event()  # set while the loop waits in a long poll
        self._leftovers = False  # a task no longer assigned still has processes or a folder here
        self._runners_lock = threading.Lock()  # guards changes of _runners, and stop()'s reads
        self._stopping = threading.Event()
        self._state_lock = threading.Lock()  # guards _started and _stopped
        self._started = False
        self._stopped = False
        self._failing = False
        self._loop_thread = threading.Thread(target=self._loop, name=f"executor-{self.id}", daemon=True)

    @property
    def url(self) -> str:
        """Where the executor's HTTP API listens, e.g. ``http://127.0.0.1:8123``."""
        return self._server.url

    @property
    def listen_url(self) -> str:
        """The URL it reports to the runservice: ``advertise_url``, else :attr:`url`."""
        return self.url if self.advertise_url is None else self.advertise_url

    def _adopt_folders(self, users: TaskUsers) -> None:
        """Count the uids owning the workspaces of earlier tasks' folders as theirs, until removed."""
        for entry in self.tasks_dir.iterdir():
            try:
                status = os.lstat(entry / "workspace")
            except OSError:
                continue
            if stat.S_ISDIR(status.st_mode):
                users.adopt(entry.name, status.st_uid)

    def _say_isolation(self) -> None:
        """Log how tasks run, and a warning if they are not isolated, or cannot reach their workspace."""
        if self.isolation.warning:
            log.warning("executor %s: %s", self.id, self.isolation.warning)
        if self._users is None:
            return
        uids = self._users.uids
        log.info("executor %s: each task runs as a uid of its own, of %d-%d", self.id, uids.start, uids[-1])
        folder = self.tasks_dir.resolve()
        for above in (folder, *folder.parents):
            with contextlib.suppress(OSError):
                if not os.stat(above).st_mode & stat.S_IXOTH:
                    log.warning(
                        "executor %s: other users may not search %s: tasks start in their workspace but "
                        "cannot reach it by its path (HOME); give the folders above it o+x",
                        self.id,
                        above,
                    )
                    return

    def start(self) -> Executor:
        """Start serving and the loop; the executor itself."""
        with self._state_lock:
            if self._started or self._stopped:
                raise RuntimeError("an executor starts once")
            self._started = True
        self._say_isolation()
        self._server.start()
        self._loop_thread.start()
        return self

    def stop(self) -> None:
        """Stop the running tasks (failed: "executor stopped"), then the loop, then serving.

        The tasks' commands are signalled at once, even while the loop waits for the
        runservice; stop() then waits up to ``STOP_TIMEOUT`` seconds for their final reports.
        """
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()  # from here on run_once starts no task
        with self._runners_lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.cancel(STOPPED)
        while self._loop_thread.is_alive() and not self._polling.is_set():
            self._loop_thread.join(0.05)  # a long poll holds nothing: its answer is dropped
        with self._runners_lock:
            runners = list(self._runners.values())
        deadline = time.monotonic() + STOP_TIMEOUT
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
            if runner.alive:
                log.warning("executor %s: task %s did not end in time", self.id, runner.task.id)
        self._server.stop()
        self._client.close()
        if self._users is not None:
            self._users.close()

    def run_once(self, wait: float = 0.0) -> None:
        """One iteration of the loop (nothing once stopped): register if needed, ask for the
        assigned tasks (waiting up to ``wait`` seconds for them to change), handle them.

        A failed report of the executor or fetch of its tasks raises a ``ServiceError``;
        a failure about one task is logged, and the other tasks are handled.
        """
        with self._lock:
            if self._stopping.is_set():
                return
            active = sorted(task_id for task_id, runner in self._runners.items() if runner.alive)
            status = ExecutorStatus(self.listen_url, self.active_tasks_limit, active)
            if status != self._reported:
                self._client.put_executor(self.id, status)
                self._reported = status
            self._polling.set()
            try:
                answer = self._client.executor_tasks(self.id, after=self._version, wait=wait)
            except RemoteServiceError as exc:
                if exc.kind is ErrorKind.NOT_EXIST:  # the runservice lost its record: register again
                    self._reported = None
                raise
            finally:
                self._polling.clear()
            if self._stopping.is_set():
                return
            if answer.version.partition(".")[0] != self._version.partition(".")[0]:
                for runner in self._runners.values():  # another runservice: it may lack reports
                    runner.forget_delivery()
            self._version = answer.version
            assigned: dict[str, ExecutorTask] = {}
            for task in answer.tasks:
                try:
                    assigned[check_id("task id", task.id)] = task
                except InvalidIdError as exc:
                    log.error("executor %s: ignoring an assigned task: %s", self.id, exc)
            self._copies = assigned
            for task in assigned.values():
                try:
                    self._handle(task)
                except (ServiceError, OSError) as exc:
                    log.warning("executor %s: task %s: %s", self.id, task.id, exc)
            self._remove_unassigned(assigned)

    def _pending(self) -> bool:
        """Whether work waits here rather than on the runservice: a status it lacks (the runservice's
        copy of a task it has unfinished differs from what runs here), a task not started for want
        of a slot or uid, or the processes or folder of a task no longer assigned."""
        if self._leftovers:
            return True
        for task_id, copy in self._copies.items():
            runner = self._runners.get(task_id)
            if runner is None:
                if copy.phase is ExecutorTaskPhase.NOTSTARTED:
                    return True
            elif not copy.phase.finished and runner.undelivered and status_of(copy) != runner.status:
                return True
        return False

    def _handle(self, task: ExecutorTask) -> None:
        runner = self._runners.get(task.id)
        if runner is not None:
            if not task.phase.finished:
                if runner.undelivered and status_of(task) != runner.status:
                    runner.report()
            elif runner.alive and not runner.status.phase.finished:
                reason = f"{ENDED}: {task.error}" if task.error else ENDED
                if runner.withdraw(reason):
                    log.warning("executor %s: task %s: %s; stopping it", self.id, task.id, reason)
            return
        if task.phase is ExecutorTaskPhase.NOTSTARTED:
            if sum(runner.alive for runner in self._runners.values()) < self.active_tasks_limit:
                files = TaskFiles.of(self.tasks_dir, task.id)
                user = None
                if self._users is not None:
                    user = self._users.acquire(task.id)
                    if user is None:
                        if task.id not in self._waiting_for_uids:
                            log.warning(
                                "executor %s: task %s waits: every task uid is taken", self.id, task.id
                            )
                        self._waiting_for_uids.add(task.id)
                        return
                    self._waiting_for_uids.discard(task.id)
                runner = TaskRunner(task, files, self._client, self.id, user)
                with self._runners_lock:
                    if self._stopping.is_set():
                        return  # stop() is cancelling the runners it knows of
                    self._runners[task.id] = runner
                runner.start()
                log.info("executor %s: started task %s", self.id, task.id)
        elif task.phase is ExecutorTaskPhase.RUNNING:
            self._fail_orphan(task)

    def _fail_orphan(self, task: ExecutorTask) -> None:
        """Mark failed a task that was running here before a restart."""
        status = status_of(task.failed(RESTARTED, now()))
        if task.id not in self._orphans_noted:
            files = TaskFiles.of(self.tasks_dir, task.id)
            for index, state in enumerate(task.step_states):
                path = files.step_log(index)
                if state.phase is ExecutorTaskPhase.RUNNING and path.exists():
                    with StepLog(path) as out:
                        out.line("step failed: the executor restarted while it ran")
            self._orphans_noted.add(task.id)
        self._client.task_status(task.id, status)
        log.warning("executor %s: task %s ran before a restart: marked failed", self.id, task.id)

    def _remove_unassigned(self, assigned: dict[str, ExecutorTask]) -> None:
        """Stop the tasks no longer assigned that still run; delete the folders of the others.

        A task's uid is released once its folder is gone, after its processes are killed.
        """
        local = set(self._runners)
        if self._users is not None:
            local.update(self._users.held())
        try:
            local.update(entry.name for entry in self.tasks_dir.iterdir() if entry.is_dir())
        except OSError as exc:
            log.warning("executor %s: cannot list %s: %s", self.id, self.tasks_dir, exc)
        self._leftovers = False
        for task_id in sorted(local - assigned.keys()):
            runner = self._runners.get(task_id)
            if runner is not None and runner.alive:
                if runner.withdraw(UNASSIGNED):
                    log.warning("executor %s: task %s: %s; stopping it", self.id, task_id, UNASSIGNED)
                self._leftovers = True
                continue
            with self._runners_lock:
                self._runners.pop(task_id, None)
            self._orphans_noted.discard(task_id)
            self._waiting_for_uids.discard(task_id)
            folder = self.tasks_dir / task_id
            try:
                if folder.exists():
                    shutil.rmtree(folder)
                    log.info("executor %s: removed the folder of task %s", self.id, task_id)
            except OSError as exc:
                log.warning("executor %s: cannot remove %s: %s", self.id, folder, exc)
                self._leftovers = True
                continue
            if self._users is not None:
                self._users.release(task_id)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            # Work pending here: ask again after ``interval`` (sooner if the tasks change).
            wait = min(self.interval, POLL_WAIT) if self._pending() else POLL_WAIT
            try:
                self.run_once(wait)
            except ServiceError as exc:
                if not self._failing:
                    log.warning("executor %s: the runservice failed: %s (retrying)", self.id, exc)
                self._failing = True
            except Exception:  # a bug: log it, and keep the executor alive
                log.exception("executor %s: the loop failed", self.id)
            else:
                if self._failing:
                    log.info("executor %s: the runservice answers again", self.id)
                self._failing = False
                if self._version:
                    continue  # the next poll waits by itself
            self._stopping.wait(self.interval)
