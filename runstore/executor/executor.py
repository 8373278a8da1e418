"""The executor: runs the tasks the runservice assigns it, and serves their logs and archives.

Its loop (every ``interval`` seconds, or :meth:`Executor.run_once`) reports the executor
to the runservice, fetches its assigned tasks, starts those not started (never more
running than ``active_tasks_limit``), sends a task's latest status again while the
runservice's copy differs, marks failed the tasks the runservice has running that no
thread here runs (they ran before a restart), stops the tasks that still run here but
are no longer assigned or that the runservice ended (e.g. failed: "executor deleted"),
and deletes the folders of tasks no longer assigned once they are not running. Files
are laid out as :mod:`runstore.executor.files` says.

Stopping a task kills its running command's process group: SIGTERM, then SIGKILL after
``KILL_GRACE`` seconds (:mod:`runstore.executor.steps`). :meth:`Executor.stop`
(and SIGTERM or SIGINT of ``main``) stops every task first, before anything else.

Run it with ``python -m runstore executor --runservice URL --data DIR --id ID``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from runstore.clock import now
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ServiceError
from runstore.contract.http import ServerThread, add_listen_argument
from runstore.contract.model import ExecutorStatus, ExecutorTask, ExecutorTaskPhase
from runstore.errors import InvalidIdError
from runstore.executor.app import ExecutorApp
from runstore.executor.files import TaskFiles
from runstore.executor.steps import StepLog
from runstore.executor.task import (
    ENDED,
    RESTARTED,
    STOPPED,
    UNASSIGNED,
    TaskRunner,
    status_of,
)
from runstore.ids import check_id

log = logging.getLogger(__name__)

STOP_TIMEOUT = 15.0  # seconds that stop() waits for the stopped tasks' final reports


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
    its bound address if None): a URL that reaches it from the runservice's host.
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
    ) -> None:
        self.id = check_id("executor id", executor_id)
        self.advertise_url = None if advertise_url is None else check_advertise_url(advertise_url)
        if active_tasks_limit < 1:
            raise ValueError(f"active_tasks_limit is at least 1, not {active_tasks_limit}")
        if interval <= 0:
            raise ValueError(f"interval is over 0, not {interval}")
        self.active_tasks_limit = active_tasks_limit
        self.interval = interval
        self.tasks_dir = Path(data_dir) / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        self._client = RunServiceClient(runservice_url)
        self._server = ServerThread(ExecutorApp(self.tasks_dir), host, port)
        self._runners: dict[str, TaskRunner] = {}
        self._orphans_noted: set[str] = set()
        self._lock = threading.Lock()  # one run_once at a time
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

    def start(self) -> Executor:
        """Start serving and the loop; the executor itself."""
        with self._state_lock:
            if self._started or self._stopped:
                raise RuntimeError("an executor starts once")
            self._started = True
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
        if self._loop_thread.is_alive():
            self._loop_thread.join()
        with self._runners_lock:
            runners = list(self._runners.values())
        deadline = time.monotonic() + STOP_TIMEOUT
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
            if runner.alive:
                log.warning("executor %s: task %s did not end in time", self.id, runner.task.id)
        self._server.stop()
        self._client.close()

    def run_once(self) -> None:
        """One iteration of the loop (nothing once stopped).

        A failed report of the executor or fetch of its tasks raises a ``ServiceError``;
        a failure about one task is logged, and the other tasks are handled.
        """
        with self._lock:
            if self._stopping.is_set():
                return
            active = sorted(task_id for task_id, runner in self._runners.items() if runner.alive)
            status = ExecutorStatus(self.listen_url, self.active_tasks_limit, active)
            self._client.put_executor(self.id, status)
            tasks = self._client.executor_tasks(self.id)
            assigned: dict[str, ExecutorTask] = {}
            for task in tasks:
                try:
                    assigned[check_id("task id", task.id)] = task
                except InvalidIdError as exc:
                    log.error("executor %s: ignoring an assigned task: %s", self.id, exc)
            for task in assigned.values():
                try:
                    self._handle(task)
                except (ServiceError, OSError) as exc:
                    log.warning("executor %s: task %s: %s", self.id, task.id, exc)
            self._remove_unassigned(assigned)

    def _handle(self, task: ExecutorTask) -> None:
        runner = self._runners.get(task.id)
        if runner is not None:
            if not task.phase.finished:
                if status_of(task) != runner.status:
                    runner.report()
            elif runner.alive and not runner.status.phase.finished:
                reason = f"{ENDED}: {task.error}" if task.error else ENDED
                if runner.withdraw(reason):
                    log.warning("executor %s: task %s: %s; stopping it", self.id, task.id, reason)
            return
        if task.phase is ExecutorTaskPhase.NOTSTARTED:
            if sum(runner.alive for runner in self._runners.values()) < self.active_tasks_limit:
                runner = TaskRunner(task, TaskFiles.of(self.tasks_dir, task.id), self._client, self.id)
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
        """Stop the tasks no longer assigned that still run; delete the folders of the others."""
        local = set(self._runners)
        try:
            local.update(entry.name for entry in self.tasks_dir.iterdir() if entry.is_dir())
        except OSError as exc:
            log.warning("executor %s: cannot list %s: %s", self.id, self.tasks_dir, exc)
        for task_id in sorted(local - assigned.keys()):
            runner = self._runners.get(task_id)
            if runner is not None and runner.alive:
                if runner.withdraw(UNASSIGNED):
                    log.warning("executor %s: task %s: %s; stopping it", self.id, task_id, UNASSIGNED)
                continue
            with self._runners_lock:
                self._runners.pop(task_id, None)
            self._orphans_noted.discard(task_id)
            folder = self.tasks_dir / task_id
            try:
                if folder.exists():
                    shutil.rmtree(folder)
                    log.info("executor %s: removed the folder of task %s", self.id, task_id)
            except OSError as exc:
                log.warning("executor %s: cannot remove %s: %s", self.id, folder, exc)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
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
            self._stopping.wait(self.interval)


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 1")
    return int(text)


def _advertise_url(text: str) -> str:
    try:
        return check_advertise_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor's command-line options (``python -m runstore executor``)."""
    parser.add_argument("--runservice", required=True, metavar="URL", help="the runservice's base URL")
    parser.add_argument("--data", required=True, metavar="DIR", help="where the tasks' files go")
    parser.add_argument("--id", required=True, help="the executor's id")
    parser.add_argument("--limit", type=_limit, default=2, metavar="N", help="tasks run at once (2)")
    add_listen_argument(parser, 0)
    parser.add_argument(
        "--advertise-url",
        type=_advertise_url,
        metavar="URL",
        help="the URL the runservice reaches it at (default: that of --listen)",
    )


def run(args: argparse.Namespace) -> int:
    """Run an executor until SIGTERM or SIGINT; print ``LISTENING <url>`` once it serves."""
    host, port = args.listen
    try:
        executor = Executor(
            args.runservice,
            args.data,
            executor_id=args.id,
            active_tasks_limit=args.limit,
            host=host,
            port=port,
            advertise_url=args.advertise_url,
        )
    except (ValueError, OSError) as exc:
        print(f"executor: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    executor.start()
    try:
        print(f"LISTENING {executor.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        executor.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m runstore executor`` (also ``python -m runstore.executor.executor``)."""
    parser = argparse.ArgumentParser(
        prog="python -m runstore executor",
        description="Run an executor of the run service until SIGTERM or SIGINT.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
