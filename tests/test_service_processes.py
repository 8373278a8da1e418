"""The runservice and an executor as separate processes on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import RemoteServiceError
from runstore.contract.http import ServiceClient
from runstore.contract.model import (
    ExecutorTask,
    ExecutorTaskPhase,
    Run,
    RunConfig,
    RunPhase,
    Step,
    StepKind,
    TaskConfig,
    TaskStatus,
)
from runstore.contract.routes import RunServiceRoutes as R
from tests.test_processes import ROOT

T = TypeVar("T")


@attrs.define
class Service:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


def start(*args: str) -> Service:
    process = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("LISTENING "):
        process.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}, exit code {process.wait()}")
    return Service(process, line.split()[1])


@pytest.fixture
def runservice(tmp_path: Path) -> Iterator[Service]:
    service = start("runstore", "runservice", "--store", str(tmp_path / "store"), "--listen", "127.0.0.1:0")
    yield service
    service.stop()


def start_executor(runservice: Service, folder: Path, limit: int = 2) -> Service:
    return start(
        "runstore",
        "executor",
        "--runservice",
        runservice.url,
        "--data",
        str(folder),
        "--id",
        "ex1",
        "--limit",
        str(limit),
        "--listen",
        "127.0.0.1:0",
    )


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def create_run(client: RunServiceClient, config: RunConfig) -> Run:
    return client.create_run(config, "/project/p1/branch/main")


def get_run(client: RunServiceClient, run_id: str) -> Run:
    return client.get_run(run_id)


def executor_tasks(client: RunServiceClient) -> dict[str, ExecutorTask]:
    return {task.task_name: task for task in client.executor_tasks("ex1")}


def test_killed_and_deleted_executor_fails_its_task(tmp_path: Path) -> None:
    runservice = start(
        "runstore",
        "runservice",
        "--store",
        str(tmp_path / "store"),
        "--listen",
        "127.0.0.1:0",
        "--executor-timeout",
        "2",  # the fetcher gives the killed executor's logs up after 2 s, not 30
    )
    try:
        _killed_and_deleted_executor_fails_its_task(runservice, tmp_path)
    finally:
        runservice.stop()


def _killed_and_deleted_executor_fails_its_task(runservice: Service, tmp_path: Path) -> None:
    client = RunServiceClient(runservice.url)
    executor = start_executor(runservice, tmp_path / "executor")
    step_pid = tmp_path / "step.pid"
    config = RunConfig(
        [
            TaskConfig(
                "slow",
                [
                    Step(StepKind.RUN, command=f"echo $$ > {step_pid}; echo started; sleep 60"),
                    Step(StepKind.RUN, command="true"),
                ],
            )
        ]
    )
    run = create_run(client, config)

    def step_running() -> Run | None:
        current = get_run(client, run.id)
        task = current.tasks[0]
        running = task.step_states and task.step_states[0].phase is ExecutorTaskPhase.RUNNING
        return current if task.status is TaskStatus.RUNNING and running else None

    wait_for("the first step to run", step_running)
    executor.process.send_signal(signal.SIGKILL)
    executor.process.wait(timeout=10)
    executor.stop()
    with contextlib.suppress(ProcessLookupError):  # a SIGKILLed executor cannot stop its steps
        os.killpg(int(step_pid.read_text()), signal.SIGKILL)
    client.delete_executor("ex1")
    finished = wait_for(
        "the run to finish", lambda: (r := get_run(client, run.id)).phase is RunPhase.FINISHED and r
    )
    task = finished.tasks[0]
    assert (task.status, task.error) == (TaskStatus.FAILED, "executor deleted")
    assert task.end_time is not None and task.start_time is not None
    assert task.step_states[0].phase is ExecutorTaskPhase.FAILED
    assert task.step_states[0].end_time == task.end_time
    assert task.step_states[1].phase is ExecutorTaskPhase.NOTSTARTED and task.step_states[1].end_time is None
    assert finished.result.value == "failed"


def test_executor_task_goes_as_soon_as_its_data_is_fetched(runservice: Service, tmp_path: Path) -> None:
    client = RunServiceClient(runservice.url)
    executor = start_executor(runservice, tmp_path / "executor")
    release = tmp_path / "release"
    wait = f"for i in $(seq 600); do [ -f {release} ] && exit 0; sleep 0.1; done; exit 1"
    config = RunConfig(
        [
            TaskConfig("fast", [Step(StepKind.RUN, command="echo fast")]),
            TaskConfig("slow", [Step(StepKind.RUN, command=wait)]),
        ]
    )
    run = create_run(client, config)
    try:
        fetched = wait_for(
            "the fast task's data",
            lambda: (r := get_run(client, run.id)).task("fast").fetched and r,
        )
        assert fetched.task("fast").status is TaskStatus.SUCCESS
        tasks = wait_for(
            "the fast executor task to go", lambda: "fast" not in (t := executor_tasks(client)) and t
        )
        assert tasks["slow"].phase is ExecutorTaskPhase.RUNNING  # the other task still runs
        assert get_run(client, run.id).phase is RunPhase.RUNNING
        with client.run_log(run.id, "fast", 0) as stream:
            log = stream.read()
        assert b"\nfast\n" in log
        release.touch()
        finished = wait_for(
            "the run to finish", lambda: (r := get_run(client, run.id)).phase is RunPhase.FINISHED and r
        )
        assert finished.result.value == "success"
        assert executor_tasks(client) == {}
    finally:
        release.touch()
        executor.stop()


def test_bad_requests_to_the_process_change_nothing(runservice: Service, tmp_path: Path) -> None:
    client = ServiceClient(runservice.url)
    store = tmp_path / "store" / "data"
    before = sorted(str(path) for path in store.rglob("*"))
    group = {"group": "/project/p1/branch/main"}
    for route, values, fields, body, status in [
        (R.create_run, {}, group, b"{oops", 400),
        (R.create_run, {}, group, b'{"tasks": 5}', 400),
        (R.put_executor, {"executor_id": "ex1"}, {}, b"x" * (2 << 20), 413),
        (R.get_run, {"run_id": "no-such-run"}, {}, None, 404),
        (R.restart_run, {"run_id": "no-such-run"}, {}, None, 404),
        (R.task_status, {"task_id": "no-such-task"}, {}, b'{"phase": "running"}', 404),
    ]:
        with pytest.raises(RemoteServiceError) as caught:
            client.request(route, values, body=body, fields=fields)
        assert caught.value.status == status, (route, caught.value)
        assert caught.value.remote_message
    assert sorted(str(path) for path in store.rglob("*")) == before


def test_second_runservice_on_a_store_exits_with_a_message(runservice: Service, tmp_path: Path) -> None:
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "runstore",
            "runservice",
            "--store",
            str(tmp_path / "store"),
            "--listen",
            "127.0.0.1:0",
            "--no-wait",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert second.returncode == 2
    assert "another runservice" in second.stderr and "owns this store" in second.stderr


def test_the_command_line_lists_every_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "runstore", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    commands = [line for line in done.stdout.splitlines() if line.startswith("    ") and line[4] != " "]
    listed = {line.split()[0] for line in commands}
    assert listed == {"demo", "runservice", "executor"}
    refused = subprocess.run(
        [sys.executable, "-m", "runstore", "runservice", "--executor-timeout", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "'-1' is not a number of seconds above 0" in refused.stderr
