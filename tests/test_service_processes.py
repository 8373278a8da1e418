"""The runservice and an executor as separate processes on loopback, over a posix store and S3."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from objstore import PosixStorage, Storage
from runstore.contract.auth import Role, new_token
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import RemoteServiceError
from runstore.contract.http.client import ServiceClient
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
from tests.conftest import S3Endpoint
from tests.test_processes import ROOT
from tests.waiting import wait_for

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


@attrs.frozen
class Store:
    """A runservice's store: its command-line arguments and environment, and the test's view of it."""

    args: tuple[str, ...]
    env: dict[str, str]
    root: Storage  # the whole folder or bucket
    prefix: str = ""  # where in root the runservice keeps its keys ("" or "<name>/")

    def keys(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix``, as the runservice names them (relative to ``self.prefix``)."""
        return [key[len(self.prefix) :] for key in self.root.list_keys(self.prefix + prefix)]


def aws_environment(endpoint: S3Endpoint, home: Path) -> dict[str, str]:
    """This environment without its ``AWS_*`` variables, but for the four that reach ``endpoint``;
    ``HOME`` is ``home`` (made empty: no ``~/.aws``)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.pop("USERPROFILE", None)
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["AWS_ENDPOINT_URL"] = f"{'https' if endpoint.secure else 'http'}://{endpoint.endpoint}"
    env["AWS_ACCESS_KEY_ID"] = endpoint.access_key
    env["AWS_SECRET_ACCESS_KEY"] = endpoint.secret_key
    env["AWS_REGION"] = endpoint.region or "us-east-1"
    return env


@pytest.fixture(params=["posix", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store: a folder given as a bare path, or a prefix of a fresh bucket given as a URL."""
    root: Storage
    if request.param == "posix":
        root = PosixStorage(str(tmp_path / "store"))
        yield Store(("--store", str(tmp_path / "store")), dict(os.environ), root)
    else:
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")()
        root = endpoint.storage(bucket)
        env = aws_environment(endpoint, tmp_path / "home")
        yield Store(("--store", f"s3://{bucket}/ci"), env, root, "ci/")
    root.close()


def start(*args: str, env: dict[str, str] | None = None) -> Service:
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("LISTENING "):
        process.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}, exit code {process.wait()}")
    return Service(process, line.split()[1])


def secret_file(text: str) -> Path:
    """A file only its owner reads, holding ``text``."""
    path = Path(tempfile.mkdtemp(prefix="runstore-tokens-")) / "secret"
    path.touch(mode=0o600)
    path.write_text(text)
    return path


TOKENS = {name: new_token() for name in ("ex1", "client", "runservice")}
CLIENT_TOKEN = TOKENS["client"]
TOKENS_FILE = secret_file(
    f"executor ex1 {TOKENS['ex1']}\nclient tests {CLIENT_TOKEN}\nrunservice main {TOKENS['runservice']}\n"
)
EXECUTOR_TOKEN_FILE = secret_file(TOKENS["ex1"])
RUNSERVICE_TOKENS_FILE = secret_file(TOKENS["runservice"])


def start_runservice(store: Store, *args: str) -> Service:
    """The runservice over ``store``, taking TOKENS_FILE's tokens."""
    return start(
        "runstore",
        "runservice",
        *store.args,
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        str(TOKENS_FILE),
        *args,
        env=store.env,
    )


@pytest.fixture
def runservice(store: Store) -> Iterator[Service]:
    service = start_runservice(store)
    yield service
    service.stop()


def start_executor(runservice: Service, folder: Path, limit: int = 2, *args: str) -> Service:
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
        "--shared-user",  # steps here talk to the test through files of its folder
        "--token-file",
        str(EXECUTOR_TOKEN_FILE),
        "--runservice-tokens-file",
        str(RUNSERVICE_TOKENS_FILE),
        *args,
    )


def create_run(client: RunServiceClient, config: RunConfig) -> Run:
    return client.create_run(config, "/project/p1/branch/main")


def get_run(client: RunServiceClient, run_id: str) -> Run:
    return client.get_run(run_id)


def executor_tasks(client: RunServiceClient) -> dict[str, ExecutorTask]:
    """The tasks of executor ex1, asked as ex1 (a client's token may not)."""
    as_executor = RunServiceClient(client.base_url, token=TOKENS["ex1"])
    try:
        return {task.task_name: task for task in as_executor.executor_tasks("ex1").tasks}
    finally:
        as_executor.close()


def wait_finished(client: RunServiceClient, run_id: str) -> Run:
    return wait_for(
        f"run {run_id} to finish",
        lambda: r if (r := get_run(client, run_id)).phase is RunPhase.FINISHED else None,
    )


def read_log(client: RunServiceClient, run_id: str, task_name: str, step: int) -> bytes:
    with client.run_log(run_id, task_name, step) as stream:
        return stream.read()


def test_the_whole_pipeline(runservice: Service, store: Store, tmp_path: Path) -> None:
    """Create a run, run it, fetch, restart it (the new run shares the finished tasks), delete both:
    the data goes with the last run that references it."""
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
    executor = start_executor(runservice, tmp_path / "executor")
    marker = tmp_path / "flaky-ran"
    config = RunConfig(
        [
            TaskConfig(
                "build",
                [
                    Step(StepKind.RUN, command="mkdir -p out && echo built-it > out/app"),
                    Step(StepKind.SAVE_TO_WORKSPACE, paths=["out"]),
                ],
            ),
            TaskConfig(
                "test",
                [Step(StepKind.RESTORE_WORKSPACE), Step(StepKind.RUN, command="cat out/app")],
                ["build"],
            ),
            TaskConfig(
                "flaky", [Step(StepKind.RUN, command=f"[ -f {marker} ] || {{ touch {marker}; exit 1; }}")]
            ),
        ]
    )
    try:
        first = wait_finished(client, create_run(client, config).id)
        assert [(t.name, t.status) for t in first.tasks] == [
            ("build", TaskStatus.SUCCESS),
            ("test", TaskStatus.SUCCESS),
            ("flaky", TaskStatus.FAILED),
        ]
        assert first.result.value == "failed" and all(task.fetched for task in first.tasks)
        assert b"\nbuilt-it\n" in read_log(client, first.id, "test", 1)
        assert store.keys(f"workspacearchives/{first.task('build').id}/")

        second = wait_finished(client, client.restart_run(first.id).id)
        assert second.result.value == "success" and second.restarted_from == first.id
        for name in ("build", "test"):  # shared: the same data, not run again
            assert second.task(name).id == first.task(name).id and second.task(name).shared
        assert second.task("flaky").id != first.task("flaky").id
        assert b"\nbuilt-it\n" in read_log(client, second.id, "test", 1)
    finally:
        executor.stop()

    client.delete_run(first.id)
    with pytest.raises(RemoteServiceError) as caught:
        client.get_run(first.id)
    assert caught.value.status == 404
    assert store.keys(f"logs/{first.task('flaky').id}/") == []  # only the first run had it
    assert b"\nbuilt-it\n" in read_log(client, second.id, "test", 1)  # shared: still there
    client.delete_run(second.id)
    assert (store.keys("logs/"), store.keys("workspacearchives/")) == ([], [])
    assert all(key.startswith(store.prefix) for key in store.root.list_keys())


def test_killed_and_deleted_executor_fails_its_task(store: Store, tmp_path: Path) -> None:
    # the fetcher gives the killed executor's logs up after 2 s, not 30
    runservice = start_runservice(store, "--executor-timeout", "2")
    try:
        _killed_and_deleted_executor_fails_its_task(runservice, tmp_path)
    finally:
        runservice.stop()


def _killed_and_deleted_executor_fails_its_task(runservice: Service, tmp_path: Path) -> None:
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
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
        started = step_pid.exists() and step_pid.read_text().strip()  # the command itself runs
        return current if task.status is TaskStatus.RUNNING and running and started else None

    wait_for("the first step to run", step_running)
    executor.process.send_signal(signal.SIGKILL)
    executor.process.wait(timeout=10)
    executor.stop()
    with contextlib.suppress(ProcessLookupError):  # a SIGKILLed executor cannot stop its steps
        os.killpg(int(step_pid.read_text()), signal.SIGKILL)
    client.delete_executor("ex1")
    finished = wait_finished(client, run.id)
    task = finished.tasks[0]
    assert (task.status, task.error) == (TaskStatus.FAILED, "executor deleted")
    assert task.end_time is not None and task.start_time is not None
    assert task.step_states[0].phase is ExecutorTaskPhase.FAILED
    assert task.step_states[0].end_time == task.end_time
    assert task.step_states[1].phase is ExecutorTaskPhase.NOTSTARTED and task.step_states[1].end_time is None
    assert finished.result.value == "failed"


def test_executor_task_goes_as_soon_as_its_data_is_fetched(runservice: Service, tmp_path: Path) -> None:
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
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
            lambda: r if (r := get_run(client, run.id)).task("fast").fetched else None,
        )
        assert fetched.task("fast").status is TaskStatus.SUCCESS
        tasks = wait_for(
            "the fast executor task to go", lambda: t if "fast" not in (t := executor_tasks(client)) else None
        )
        assert tasks["slow"].phase is ExecutorTaskPhase.RUNNING  # the other task still runs
        assert get_run(client, run.id).phase is RunPhase.RUNNING
        with client.run_log(run.id, "fast", 0) as stream:
            log = stream.read()
        assert b"\nfast\n" in log
        release.touch()
        finished = wait_finished(client, run.id)
        assert finished.result.value == "success"
        assert executor_tasks(client) == {}
    finally:
        release.touch()
        executor.stop()


def test_bad_requests_to_the_process_change_nothing(runservice: Service, store: Store) -> None:
    clients = {
        Role.CLIENT: ServiceClient(runservice.url, token=CLIENT_TOKEN),
        Role.EXECUTOR: ServiceClient(runservice.url, token=TOKENS["ex1"]),
    }
    before = store.keys()
    assert before  # the lease, at least
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
            assert route.role is not None
            clients[route.role].request(route, values, body=body, fields=fields)
        assert caught.value.status == status, (route, caught.value)
        assert caught.value.remote_message
    assert store.keys() == before


def test_second_runservice_on_a_store_exits_with_a_message(runservice: Service, store: Store) -> None:
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "runstore",
            "runservice",
            *store.args,
            "--listen",
            "127.0.0.1:0",
            "--no-tokens",
            "--no-wait",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=store.env,
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
    assert listed == {"demo", "runservice", "executor", "runs", "logs", "gc", "caches"}
    refused = subprocess.run(
        [sys.executable, "-m", "runstore", "runservice", "--executor-timeout", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "'-1' is not a number of seconds above 0" in refused.stderr


def test_the_process_refuses_callers_without_the_right_token(runservice: Service) -> None:
    for token, status in [(None, 401), (new_token(), 401), (TOKENS["ex1"], 403)]:
        client = RunServiceClient(runservice.url, token=token)
        try:
            with pytest.raises(RemoteServiceError) as refused:
                client.list_runs()
            assert refused.value.status == status
        finally:
            client.close()
