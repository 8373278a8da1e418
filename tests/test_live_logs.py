"""Live logs and cancel: a running step's log read and followed as it is written, and a run
cancelled with a step still running."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from objstore import MemoryStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError
from runstore.contract.model import (
    Run,
    RunConfig,
    RunPhase,
    RunResult,
    Step,
    StepKind,
    TaskConfig,
    TaskStatus,
)
from runstore.contract.routes import RunServiceRoutes
from runstore.executor.executor import Executor
from runstore.runservice import logs
from runstore.runservice.api import serve
from runstore.runservice.service import RunService
from tests.waiting import wait_for

T = TypeVar("T")
GROUP = "/project/p1/branch/main"


@attrs.define
class Live:
    client: RunServiceClient
    folder: Path


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    service = RunService(MemoryStorage(), interval=0.05)
    server = serve(service)
    executor = Executor(server.url, tmp_path / "executor", executor_id="ex1", interval=0.05).start()
    client = RunServiceClient(server.url)
    try:
        yield Live(client, tmp_path)
    finally:
        client.close()
        executor.stop()
        server.stop()
        service.stop()


def waiting_for(name: str) -> str:
    """A command that waits (20 s at most) for a file ``name`` in its workspace."""
    return f"for i in $(seq 400); do [ -f {name} ] && break; sleep 0.05; done"


def workspace(live: Live, run: Run, task: str) -> Path:
    """The workspace of a task on the executor (whose steps may run as a user of their own)."""
    return live.folder / "executor" / "tasks" / run.task(task).id / "workspace"


def running(client: RunServiceClient, run_id: str) -> bool | None:
    return client.get_run(run_id).tasks[0].status is TaskStatus.RUNNING or None


def finished(client: RunServiceClient, run_id: str) -> Run | None:
    run = client.get_run(run_id)
    return run if run.phase is RunPhase.FINISHED else None


def test_a_running_steps_log_is_read_and_followed_as_it_is_written(live: Live) -> None:
    command = f"echo one-$((1+1)); {waiting_for('go')}; echo two-$((2+2))"  # the log shows the command too
    run = live.client.create_run(RunConfig([TaskConfig("t", [Step(StepKind.RUN, command=command)])]), GROUP)
    wait_for("the step to run", lambda: running(live.client, run.id))
    so_far = wait_for("its first line", lambda: _read_if(live.client, run.id, b"one-2"))
    assert b"two-4" not in so_far  # what exists so far, not a 404
    received: list[bytes] = []
    done = threading.Event()

    def follow() -> None:
        for chunk in live.client.follow_log(run.id, "t", 0):
            received.append(chunk)
        done.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    wait_for("the followed first line", lambda: b"one-2" in b"".join(received) or None)
    assert not done.is_set()  # the step still runs: the stream stays open
    (workspace(live, run, "t") / "go").touch()
    assert done.wait(20), "the follow did not end with the step"
    text = b"".join(received)
    assert text.count(b"one-2") == 1 and b"two-4" in text and text.endswith(b"step succeeded\n")
    assert text == _read(live.client, run.id)  # all of it, once, as the run store keeps it


def _read_if(client: RunServiceClient, run_id: str, part: bytes) -> bytes | None:
    """The log so far if it holds ``part``; None before (the step may not have started)."""
    try:
        data = _read(client, run_id)
    except RemoteServiceError as exc:
        if exc.kind is ErrorKind.NOT_EXIST:
            return None
        raise
    return data if part in data else None


def _read(client: RunServiceClient, run_id: str) -> bytes:
    with client.run_log(run_id, "t", 0) as stream:
        return stream.read()


def test_followers_are_bounded(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "POLL", 0.05)
    run = live.client.create_run(
        RunConfig([TaskConfig("t", [Step(StepKind.RUN, command=waiting_for("go"))])]), GROUP
    )
    wait_for("the step to run", lambda: running(live.client, run.id))
    values = {"run_id": run.id, "task_name": "t", "step": 0}
    follow = {"follow": "true"}
    streams = [
        live.client.http.open(RunServiceRoutes.run_log, values, fields=follow, deadline=False)
        for _ in range(logs.MAX_FOLLOWERS)
    ]
    try:
        with pytest.raises(RemoteServiceError) as refused:
            live.client.http.open(RunServiceRoutes.run_log, values, fields=follow)
        assert (refused.value.kind, refused.value.status) == (ErrorKind.UNAVAILABLE, 503)
    finally:
        (workspace(live, run, "t") / "go").touch()
        for stream in streams:
            stream.close()


def test_cancel_stops_the_running_step_cancels_the_rest_and_keeps_the_logs(live: Live) -> None:
    config = RunConfig(
        [
            TaskConfig("slow", [Step(StepKind.RUN, command="echo $$ > pid; echo started; sleep 60")]),
            TaskConfig("after", [Step(StepKind.RUN, command="echo never")], ["slow"]),
        ]
    )
    run = live.client.create_run(config, GROUP)
    pid_file = workspace(live, run, "slow") / "pid"
    wait_for("the step to run", lambda: (pid_file.exists() and pid_file.read_text().strip()) or None)
    pid = int(pid_file.read_text())
    cancelled = live.client.cancel_run(run.id)
    assert cancelled.cancelled and cancelled.task("after").status is TaskStatus.CANCELLED
    stopped = wait_for("the run to stop", lambda: finished(live.client, run.id))
    assert stopped.result is RunResult.STOPPED
    slow = stopped.task("slow")
    assert (slow.status, slow.error) == (TaskStatus.FAILED, "cancelled") and slow.fetched
    assert slow.step_states[0].end_time is not None
    with live.client.run_log(run.id, "slow", 0) as stream:
        assert b"started" in stream.read()  # the log so far, fetched and kept
    wait_for("the step's process to go", lambda: not _alive(pid) or None, timeout=10)
    with pytest.raises(RemoteServiceError) as refused:
        live.client.cancel_run(run.id)
    assert refused.value.status == 409


def _alive(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
        return True
    return False


def test_a_bad_log_request_is_a_400(live: Live) -> None:
    run = live.client.create_run(RunConfig([TaskConfig("t", [Step(StepKind.RUN, command="true")])]), GROUP)
    for fields in ({"follow": "maybe"}, {"start": "-1"}):
        with pytest.raises(RemoteServiceError) as refused:
            values = {"run_id": run.id, "task_name": "t", "step": 0}
            live.client.http.request(RunServiceRoutes.run_log, values, fields=fields)
        assert refused.value.status == 400
