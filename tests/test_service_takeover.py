"""Runservices that die, restart and take over, with a real executor long-polling them
(processes on loopback, over a posix store)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from objstore import PosixStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ServiceError
from runstore.contract.model import RunConfig, RunResult, Step, StepKind, TaskConfig, TaskStatus
from tests.test_processes import ROOT
from tests.test_service_processes import (
    CLIENT_TOKEN,
    TOKENS_FILE,
    Service,
    Store,
    create_run,
    start,
    start_executor,
    wait_finished,
)
from tests.waiting import wait_for

LEASE_TTL = 1.5
ECHO = RunConfig([TaskConfig("echo", [Step(StepKind.RUN, command="echo hello")])])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def runservice_command(store: Store, port: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "runstore",
        "runservice",
        *store.args,
        "--listen",
        f"127.0.0.1:{port}",
        "--tokens",
        str(TOKENS_FILE),
        "--lease-ttl",
        str(LEASE_TTL),
        *args,
    ]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    root = PosixStorage(str(tmp_path / "store"))
    return Store(("--store", str(tmp_path / "store")), {}, root)


def listening(process: subprocess.Popen[str]) -> Service:
    """The runservice ``process`` once it says where it listens (it does once it holds the lease)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("LISTENING "), (line, process.poll())
    return Service(process, line.split()[1])


def test_a_standby_takes_over_within_the_lease_and_the_executor_follows(store: Store, tmp_path: Path) -> None:
    port = free_port()
    first = start(*runservice_command(store, port)[2:])
    standby = subprocess.Popen(
        runservice_command(store, port),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    executor = start_executor(first, tmp_path / "executor")
    client = RunServiceClient(first.url, token=CLIENT_TOKEN)
    second: Service | None = None
    try:
        assert wait_finished(client, create_run(client, ECHO).id).result is RunResult.SUCCESS
        killed = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        second = listening(standby)  # it waited for the lease, then took it and the port
        assert time.monotonic() - killed < LEASE_TTL + 2.0  # the lease's TTL, and a renewal's pause
        run = create_run(client, ECHO)
        assert wait_finished(client, run.id).result is RunResult.SUCCESS  # the executor polls the new owner
    finally:
        client.close()
        executor.stop()
        first.stop()
        (second or Service(standby, "")).stop()


def test_a_runservice_restart_does_not_fail_the_tasks_of_live_executors(store: Store, tmp_path: Path) -> None:
    port = free_port()
    first = start(*runservice_command(store, port, "--executor-timeout", "2")[2:])
    executor = start_executor(first, tmp_path / "executor")
    client = RunServiceClient(first.url, token=CLIENT_TOKEN)
    release = tmp_path / "release"
    wait = f"for i in $(seq 600); do [ -f {release} ] && exit 0; sleep 0.05; done; exit 1"
    config = RunConfig([TaskConfig("slow", [Step(StepKind.RUN, command=wait)])])
    second: Service | None = None
    try:
        run = create_run(client, config)
        wait_for("the task to run", lambda: client.get_run(run.id).tasks[0].status is TaskStatus.RUNNING)
        first.stop()  # SIGTERM: the lease is handed over at once
        second = start(*runservice_command(store, port, "--executor-timeout", "2")[2:])
        time.sleep(2.5)  # past the executor timeout: the executor polls the new runservice meanwhile
        release.touch()
        finished = wait_finished(client, run.id)
        assert (finished.result, finished.tasks[0].error) == (RunResult.SUCCESS, "")
    finally:
        client.close()
        executor.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_an_executor_that_restarts_registers_again_on_its_next_poll(store: Store, tmp_path: Path) -> None:
    runservice = start(*runservice_command(store, 0, "--executor-timeout", "2")[2:])
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
    executor = start_executor(runservice, tmp_path / "executor")
    try:
        assert wait_finished(client, create_run(client, ECHO).id).result is RunResult.SUCCESS
        executor.process.send_signal(signal.SIGKILL)
        executor.process.wait(timeout=10)
        executor.stop()
        record = "runservice/executors/ex1.json"
        wait_for("the silent executor reaped", lambda: record not in store.keys("runservice/executors/"))
        executor = start_executor(runservice, tmp_path / "executor")
        assert wait_finished(client, create_run(client, ECHO).id).result is RunResult.SUCCESS
    finally:
        client.close()
        executor.stop()
        runservice.stop()


CHAIN = RunConfig(
    [
        TaskConfig("a", [Step(StepKind.RUN, command="echo a")]),
        TaskConfig("b", [Step(StepKind.RUN, command="echo b")], depends=["a"]),
        TaskConfig("c", [Step(StepKind.RUN, command="echo c")], depends=["b"]),
    ]
)


@pytest.mark.slow
def test_runservices_killed_at_random_points_leave_no_run_stuck_and_lose_no_log(
    store: Store, tmp_path: Path
) -> None:
    port = free_port()
    command = runservice_command(store, port, "--executor-timeout", "5")[2:]
    chance = random.Random(5)
    service = start(*command)
    executor = start_executor(service, tmp_path / "executor")
    created: list[str] = []
    try:
        for _ in range(6):
            client = RunServiceClient(service.url, token=CLIENT_TOKEN)
            with contextlib.suppress(ServiceError):  # a run whose answer was lost may exist or not
                for _ in range(2):
                    created.append(create_run(client, CHAIN).id)
                    time.sleep(chance.uniform(0.0, 0.3))
            client.close()
            service.process.send_signal(signal.SIGKILL)
            service.process.wait(timeout=10)
            service.stop()
            service = start(*command)  # waits for the killed one's lease, then takes over
        client = RunServiceClient(service.url, token=CLIENT_TOKEN)
        every = [run.id for run in client.list_runs(limit=500).runs]
        assert set(created) <= set(every)
        for run_id in every:  # none is stuck: the last owner finishes each
            run = wait_finished(client, run_id)
            assert run.result is RunResult.SUCCESS, run
            for task in run.tasks:
                with client.run_log(run_id, task.name, 0) as log:
                    assert f"\n{task.name}\n".encode() in log.read()
        client.close()
    finally:
        executor.stop()
        service.stop()


def test_an_executor_killed_mid_task_is_counted_gone_after_the_timeout(store: Store, tmp_path: Path) -> None:
    runservice = start(*runservice_command(store, 0, "--executor-timeout", "2")[2:])
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
    executor = start_executor(runservice, tmp_path / "executor")
    pid = tmp_path / "step.pid"
    config = RunConfig([TaskConfig("slow", [Step(StepKind.RUN, command=f"echo $$ > {pid}; exec sleep 60")])])
    try:
        run = create_run(client, config)
        wait_for("the step to start", lambda: pid.exists() and pid.read_text().strip())
        executor.process.send_signal(signal.SIGKILL)
        executor.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # a SIGKILLed executor cannot stop its steps
            os.killpg(int(pid.read_text()), signal.SIGKILL)
        finished = wait_finished(client, run.id)  # no one deletes the executor: its silence does
        task = finished.tasks[0]
        assert (task.status, task.error) == (TaskStatus.FAILED, "executor deleted")
        assert task.start_time is not None and task.end_time is not None
        assert task.step_states[0].end_time == task.end_time
    finally:
        client.close()
        executor.stop()
        runservice.stop()
