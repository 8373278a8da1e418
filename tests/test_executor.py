"""The executor against a stand-in of the runservice's HTTP API (tests/executor_runservice.py).

Steps that must stay running wait for a file the test creates, for at most a few
seconds, so no test can hang on them.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import urllib3

from runstore.contract.errors import ServiceError
from runstore.contract.model import (
    ArchiveRef,
    ExecutorTask,
    ExecutorTaskPhase,
    Step,
    StepKind,
    StepState,
)
from runstore.contract.routes import ExecutorRoutes
from runstore.errors import InvalidIdError
from runstore.executor.cli import main
from runstore.executor.executor import Executor
from runstore.executor.files import ArchiveError, workspace_path, write_tar
from tests.executor_runservice import RunserviceStandIn

ROOT = Path(__file__).resolve().parent.parent
EXECUTOR_ID = "ex-1"
RUNNING = ExecutorTaskPhase.RUNNING
SUCCESS = ExecutorTaskPhase.SUCCESS
FAILED = ExecutorTaskPhase.FAILED
NOTSTARTED = ExecutorTaskPhase.NOTSTARTED

MakeExecutor = Callable[..., Executor]


# -- helpers


def make_task(task_id: str, steps: list[Step], **fields: Any) -> ExecutorTask:
    fields.setdefault("cache_group", "projects/p1")
    return ExecutorTask(
        id=task_id,
        run_id="run-1",
        executor_id=EXECUTOR_ID,
        task_name=f"name-{task_id}",
        steps=steps,
        **fields,
    )


def run(command: str) -> Step:
    return Step(StepKind.RUN, command=command)


def wait_file(path: str | Path, seconds: float = 10.0) -> str:
    """A shell snippet that waits until ``path`` exists, for at most about ``seconds``."""
    return (
        f'i=0; while [ ! -e "{path}" ] && [ $i -lt {int(seconds / 0.02)} ]; do sleep 0.02; i=$((i+1)); done'
    )


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.02)


LOG = ExecutorRoutes.log
ARCHIVE = ExecutorRoutes.archive
routes = {"log": LOG, "archive": ARCHIVE}


def log_url(base: str, task_id: str, step: int | str) -> str:
    return base + LOG.path(task_id=task_id, step=step)


def archive_url(base: str, task_id: str, step: int) -> str:
    return base + ARCHIVE.path(task_id=task_id, step=step)


def get(url: str, method: str = "GET") -> urllib3.BaseHTTPResponse:
    return urllib3.request(method, url, retries=False, timeout=5.0)


def text_of(url: str) -> str:
    response = get(url)
    return response.data.decode() if response.status == 200 else ""


def tar_of(members: dict[str, bytes | str]) -> bytes:
    """A tar of regular files (bytes) and symlinks (str: the target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def files_of(data: bytes) -> dict[str, bytes | None]:
    """The members of a tar: a file's content, None for anything else."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        result: dict[str, bytes | None] = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            result[member.name] = extracted.read() if extracted is not None else None
        return result


def step_phase(task: ExecutorTask, index: int) -> ExecutorTaskPhase:
    """The phase of a step as the runservice has it (notstarted before the first report)."""
    return task.step_states[index].phase if task.step_states else NOTSTARTED


def assert_utc(*times: datetime | None) -> None:
    for value in times:
        assert value is not None and value.utcoffset() == timedelta(0)


def assert_finished_step(state: StepState, phase: ExecutorTaskPhase, exit_code: int | None) -> None:
    assert state.phase is phase
    assert state.exit_code == exit_code
    assert_utc(state.start_time, state.end_time)
    assert state.start_time is not None and state.end_time is not None
    assert state.start_time <= state.end_time


# -- fixtures


@pytest.fixture
def runservice() -> Iterator[RunserviceStandIn]:
    standin = RunserviceStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def executors(runservice: RunserviceStandIn, tmp_path: Path) -> Iterator[MakeExecutor]:
    """Makes executors on ``tmp_path/data`` (started unless ``start=False``); stops them after the test."""
    made: list[Executor] = []

    def make(*, start: bool = True, **options: Any) -> Executor:
        options.setdefault("executor_id", EXECUTOR_ID)
        options.setdefault("interval", 0.05)
        executor = Executor(runservice.url, tmp_path / "data", **options)
        made.append(executor)
        return executor.start() if start else executor

    yield make
    for executor in made:
        executor.stop()


def task_dir(tmp_path: Path, task_id: str) -> Path:
    return tmp_path / "data" / "tasks" / task_id


# -- running steps


def test_run_output_is_in_the_log_while_the_step_runs(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR_TEST_OWN_VARIABLE", "not for tasks")
    runservice.add_task(
        make_task(
            "t1",
            [
                run('echo "home=$HOME lang=$LANG greeting=$GREETING"; env'),
                run(f"echo first; {wait_file('go')}; echo second >&2"),
            ],
            environment={"GREETING": "hello"},
        )
    )
    executor = executors()
    running_log = log_url(executor.url, "t1", 1)
    wait_until(lambda: "first" in text_of(running_log).splitlines(), "first line in the running step's log")
    assert "second" not in text_of(running_log).splitlines()
    task = runservice.task("t1")
    assert task.phase is RUNNING and task.step_states[1].phase is RUNNING
    assert task.step_states[0].phase is SUCCESS
    assert_utc(task.start_time, task.step_states[1].start_time)
    wait_until(
        lambda: ["t1"] in [report.active_tasks for report in runservice.executor_reports],
        "executor status with its active task",
    )
    registered = runservice.executors[EXECUTOR_ID]
    assert (registered.listen_url, registered.active_tasks_limit) == (executor.url, 2)

    (task_dir(tmp_path, "t1") / "workspace" / "go").touch()
    task = runservice.wait_finished("t1")
    assert task.phase is SUCCESS, task.error
    assert task.error == ""
    assert_utc(task.start_time, task.end_time)
    assert task.start_time is not None and task.end_time is not None and task.start_time <= task.end_time
    for state in task.step_states:
        assert_finished_step(state, SUCCESS, 0)
    first_end, second_start = task.step_states[0].end_time, task.step_states[1].start_time
    assert first_end is not None and second_start is not None and first_end <= second_start

    lines = text_of(running_log).splitlines()
    assert lines.index("first") < lines.index("second") < lines.index("exit code 0")
    assert lines[:2] == ["step 1: run", f"$ echo first; {wait_file('go')}; echo second >&2"]
    assert lines[-1] == "step succeeded"
    env_log = text_of(log_url(executor.url, "t1", 0))
    workspace = task_dir(tmp_path, "t1") / "workspace"
    assert f"home={workspace} lang=C.UTF-8 greeting=hello" in env_log
    assert "PATH=" in env_log
    assert "EXECUTOR_TEST_OWN_VARIABLE" not in env_log
    setup = text_of(log_url(executor.url, "t1", "setup"))
    assert "task t1 (name-t1) of run run-1" in setup
    assert f"workspace: {workspace}" in setup
    assert "GREETING" in setup and "hello" not in setup


def test_failing_command_fails_its_step_and_the_task(
    runservice: RunserviceStandIn, executors: MakeExecutor
) -> None:
    runservice.add_task(make_task("t1", [run("echo before; exit 3"), run("echo never")]))
    executor = executors()
    task = runservice.wait_finished("t1")
    assert task.phase is FAILED
    assert "exited with code 3" in task.error and "step 0" in task.error
    assert_utc(task.end_time)
    assert_finished_step(task.step_states[0], FAILED, 3)
    assert task.step_states[1] == StepState()
    log = text_of(log_url(executor.url, "t1", 0))
    assert "before" in log and "exit code 3" in log and "step failed" in log
    missing = get(log_url(executor.url, "t1", 1))
    assert missing.status == 404 and json.loads(missing.data)["kind"] == "not_exist"


def test_processes_left_in_the_background_end_with_their_step(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    runservice.add_task(make_task("t1", [run("(sleep 0.3; touch late) & echo started")]))
    executors()
    assert runservice.wait_finished("t1").phase is SUCCESS
    time.sleep(0.6)
    assert not (task_dir(tmp_path, "t1") / "workspace" / "late").exists()


# -- workspace archives


def test_save_to_workspace_makes_an_archive_served_over_http(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    make = (
        "mkdir -p out/sub && echo a > out/a.txt && echo b > out/sub/b.txt && echo t > top.txt && echo o > o"
    )
    save = Step(StepKind.SAVE_TO_WORKSPACE, name="keep", paths=["out", "top.txt"])
    runservice.add_task(make_task("t1", [run(make), save]))
    executor = executors()
    task = runservice.wait_finished("t1")
    assert task.phase is SUCCESS, task.error
    assert_finished_step(task.step_states[1], SUCCESS, None)
    assert (task_dir(tmp_path, "t1") / "archives" / "1.tar").is_file()

    response = get(archive_url(executor.url, "t1", 1))
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-tar"
    assert files_of(response.data) == {
        "out": None,
        "out/a.txt": b"a\n",
        "out/sub": None,
        "out/sub/b.txt": b"b\n",
        "top.txt": b"t\n",
    }
    log = text_of(log_url(executor.url, "t1", 1))
    assert "'out', 'top.txt'" in log and "archive 1: 5 entries" in log
    missing = get(archive_url(executor.url, "t1", 0))
    assert missing.status == 404 and json.loads(missing.data)["kind"] == "not_exist"


def test_restore_workspace_extracts_the_archives_in_order(
    runservice: RunserviceStandIn, executors: MakeExecutor
) -> None:
    runservice.archives[("t-a", 1)] = tar_of({"x.txt": b"one\n", "dir/y.txt": b"why\n"})
    runservice.archives[("t-b", 2)] = tar_of({"x.txt": b"two\n"})
    refs = [ArchiveRef("t-a", 1), ArchiveRef("t-b", 2)]
    restore = Step(StepKind.RESTORE_WORKSPACE)
    runservice.add_task(make_task("t1", [restore, run("cat x.txt dir/y.txt")], workspace=refs))
    runservice.add_task(make_task("t2", [restore], workspace=[ArchiveRef("t-gone", 0)]))
    executor = executors()

    task = runservice.wait_finished("t1")
    assert task.phase is SUCCESS, task.error
    assert "two\nwhy\n" in text_of(log_url(executor.url, "t1", 1))
    log = text_of(log_url(executor.url, "t1", 0))
    assert "step 1 of task t-a" in log and "step 2 of task t-b" in log
    assert log.index("t-a") < log.index("t-b")

    task = runservice.wait_finished("t2")
    assert task.phase is FAILED
    assert "not_exist" in text_of(log_url(executor.url, "t2", 0))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.txt": b"evil"}, "outside the destination"),
        ({"abs": "/etc"}, "absolute"),
        ({"up": "../../.."}, "outside the destination"),
    ],
)
def test_restore_workspace_refuses_unsafe_archives(
    runservice: RunserviceStandIn,
    executors: MakeExecutor,
    tmp_path: Path,
    members: dict[str, bytes | str],
    message: str,
) -> None:
    runservice.archives[("t-a", 0)] = tar_of(members)
    task = make_task("t1", [Step(StepKind.RESTORE_WORKSPACE)], workspace=[ArchiveRef("t-a", 0)])
    runservice.add_task(task)
    executor = executors()
    assert runservice.wait_finished("t1").phase is FAILED
    assert message in text_of(log_url(executor.url, "t1", 0))
    assert not (task_dir(tmp_path, "t1") / "evil.txt").exists()
    assert not (task_dir(tmp_path, "t1") / "workspace" / "abs").exists()


# -- caches


def test_save_cache_then_restore_it_by_key_prefix(
    runservice: RunserviceStandIn, executors: MakeExecutor
) -> None:
    save = Step(StepKind.SAVE_CACHE, paths=["deps"], keys=["deps-v1-abc"])
    runservice.add_task(make_task("t1", [run("mkdir deps && echo lib > deps/lib.txt"), save]))
    executor = executors()
    assert runservice.wait_finished("t1").phase is SUCCESS
    assert files_of(runservice.caches["projects/p1"]["deps-v1-abc"]) == {
        "deps": None,
        "deps/lib.txt": b"lib\n",
    }
    assert "saved cache 'deps-v1-abc'" in text_of(log_url(executor.url, "t1", 1))

    restore = Step(StepKind.RESTORE_CACHE, keys=["deps-v2-abc", "deps-v1-"])
    runservice.add_task(make_task("t2", [restore, run("cat deps/lib.txt")]))
    runservice.add_task(make_task("t3", [Step(StepKind.RESTORE_CACHE, keys=["other"]), run("ls")]))
    runservice.add_task(make_task("t4", [run("mkdir deps && echo new > deps/lib.txt"), save]))
    for task_id in ("t2", "t3", "t4"):
        assert runservice.wait_finished(task_id).phase is SUCCESS, task_id
    assert "restored cache 'deps-v1-abc'" in text_of(log_url(executor.url, "t2", 0))
    assert "lib\n" in text_of(log_url(executor.url, "t2", 1))
    assert "no cache matched" in text_of(log_url(executor.url, "t3", 0))
    assert "exists already" in text_of(log_url(executor.url, "t4", 1))
    assert files_of(runservice.caches["projects/p1"]["deps-v1-abc"])["deps/lib.txt"] == b"lib\n"


def test_cache_steps_need_keys_and_a_group(runservice: RunserviceStandIn, executors: MakeExecutor) -> None:
    runservice.add_task(make_task("t1", [Step(StepKind.SAVE_CACHE, paths=["."])]))
    runservice.add_task(make_task("t2", [Step(StepKind.RESTORE_CACHE, keys=["k"])], cache_group=""))
    executor = executors()
    assert runservice.wait_finished("t1").phase is FAILED
    assert runservice.wait_finished("t2").phase is FAILED
    assert "needs a key" in text_of(log_url(executor.url, "t1", 0))
    assert "no cache group" in text_of(log_url(executor.url, "t2", 0))


# -- paths out of the workspace


def test_paths_out_of_the_workspace_fail_the_step(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    links = "mkdir d && echo x > d/f && ln -s / root && mkdir e && ln -s /etc e/etc"
    cases = {
        "t1": (Step(StepKind.SAVE_TO_WORKSPACE, paths=["d", "../outside"]), "escapes the workspace"),
        "t2": (Step(StepKind.SAVE_TO_WORKSPACE, paths=[str(tmp_path)]), "is absolute"),
        "t3": (Step(StepKind.SAVE_CACHE, paths=["root/etc"], keys=["k"]), "escapes the workspace"),
        "t4": (Step(StepKind.SAVE_TO_WORKSPACE, paths=["e"]), "cannot archive e/etc"),
    }
    for task_id, (step, _) in cases.items():
        runservice.add_task(make_task(task_id, [run(links), step, run("echo never")]))
    executor = executors(active_tasks_limit=4)
    for task_id, (_, message) in cases.items():
        task = runservice.wait_finished(task_id)
        assert task.phase is FAILED, task_id
        assert task.step_states[2].phase is NOTSTARTED
        assert message in text_of(log_url(executor.url, task_id, 1)), task_id
        assert get(archive_url(executor.url, task_id, 1)).status == 404
    assert runservice.caches == {}


@pytest.mark.parametrize(
    ("path", "normal"),
    [("a", "a"), ("a/./b/..", "a"), (".", "."), ("d/", "d"), ("in/link", "in/link"), ("in/link/..", "in")],
)
def test_workspace_path_accepts_paths_inside(tmp_path: Path, path: str, normal: str) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "link").symlink_to("..")
    assert workspace_path(tmp_path, path) == normal


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("..", "escapes"),
        ("a/../../x", "escapes"),
        ("out/x", "through a symlink"),
        ("a\0b", "NUL"),
    ],
)
def test_workspace_path_refuses_paths_outside(tmp_path: Path, path: str, message: str) -> None:
    workspace = tmp_path / "ws"
    (workspace / "in").mkdir(parents=True)
    (workspace / "out").symlink_to(tmp_path)
    (workspace / "in" / "link").symlink_to("..")
    with pytest.raises(ArchiveError, match=message):
        workspace_path(workspace, path)


def test_write_tar_refuses_missing_paths_and_leaves_no_partial_file(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    destination = tmp_path / "out.tar"
    with pytest.raises(ArchiveError, match="does not exist"):
        write_tar(tmp_path, ["a", "b"], destination, print)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a"]


def test_write_tar_skips_fifos(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "f").write_text("f")
    os.mkfifo(workspace / "pipe")
    notes: list[str] = []
    assert write_tar(workspace, ["."], tmp_path / "out.tar", notes.append) == 2
    assert notes == ["skipped ./pipe: not a file, folder or link"]
    assert files_of((tmp_path / "out.tar").read_bytes()) == {".": None, "./f": b"f"}


# -- the limit, restarts, deletions, lost reports


def test_never_more_tasks_at_once_than_the_limit(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    events = shared / "events"
    command = f'echo "start $T" >> {events}; {wait_file(shared / "go-$T")}; echo "end $T" >> {events}'
    for name in ("t1", "t2", "t3"):
        runservice.add_task(make_task(name, [run(command)], environment={"T": name}))

    def started() -> list[str]:
        lines = events.read_text().splitlines() if events.exists() else []
        return [line.split()[1] for line in lines if line.startswith("start")]

    executors(active_tasks_limit=2, shared_user=True)  # the steps write to the test's folder
    wait_until(lambda: len(started()) == 2, "two tasks started")
    runservice.wait_caught_up(EXECUTOR_ID, polls=3)  # it saw the latest tasks, and waits on
    assert len(started()) == 2
    (waiting,) = {"t1", "t2", "t3"} - set(started())
    assert runservice.task(waiting).phase is NOTSTARTED
    assert sorted(runservice.executor_reports[-1].active_tasks) == sorted(started())

    (shared / f"go-{started()[0]}").touch()
    wait_until(lambda: len(started()) == 3, "the third task started")
    for name in ("t1", "t2", "t3"):
        (shared / f"go-{name}").touch()
    for name in ("t1", "t2", "t3"):
        assert runservice.wait_finished(name).phase is SUCCESS

    running, most = 0, 0
    for line in events.read_text().splitlines():
        running += 1 if line.startswith("start") else -1
        most = max(most, running)
    assert most == 2
    assert runservice.max_running == 2
    assert max(len(report.active_tasks) for report in runservice.executor_reports) == 2


def start_cli(runservice: RunserviceStandIn, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """An executor process on ``tmp_path/data``, and its URL from its ``LISTENING`` line."""
    command = [sys.executable, "-m", "runstore", "executor", "--runservice", runservice.url]
    command += [
        "--data",
        str(tmp_path / "data"),
        "--id",
        EXECUTOR_ID,
        "--limit",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--shared-user",  # the steps write their pids to the test's folder
        "--no-tokens",  # the stand-in takes none
    ]
    with (tmp_path / "executor.log").open("a") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20.0)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("LISTENING http://127.0.0.1:"):
        process.kill()
        process.wait()
        raise AssertionError(f"no LISTENING line but {line!r}: {(tmp_path / 'executor.log').read_text()}")
    return process, line.split()[1]


def step_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip().isdigit(), "the step's pid")
    return int(path.read_text())


def test_restart_fails_the_tasks_that_ran_before(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "step.pid"
    steps = [run("echo one"), run(f"echo $$ > {pid_file}; echo two; {wait_file('go')}"), run("echo three")]
    runservice.add_task(make_task("t1", steps))
    process, _ = start_cli(runservice, tmp_path)
    try:
        before = runservice.wait_task("t1", lambda task: step_phase(task, 1) is RUNNING)
        pid = step_pid(pid_file)
    finally:
        process.kill()
        process.wait(10)
    os.killpg(pid, signal.SIGKILL)  # the step runs in a session of its own: a crash leaves it

    executor = executors()
    task = runservice.wait_finished("t1")
    assert task.phase is FAILED and task.error == "executor restarted"
    assert_utc(task.end_time)
    assert task.start_time == before.start_time
    assert task.start_time is not None and task.end_time is not None and task.start_time < task.end_time
    assert task.step_states[0] == before.step_states[0] and task.step_states[0].phase is SUCCESS
    restarted = task.step_states[1]
    assert restarted.phase is FAILED and restarted.end_time == task.end_time
    assert restarted.start_time == before.step_states[1].start_time
    assert task.step_states[2] == StepState()
    log = text_of(log_url(executor.url, "t1", 1))
    assert "two" in log and "the executor restarted while it ran" in log
    assert runservice.executors[EXECUTOR_ID].listen_url == executor.url


def test_cli_stops_its_tasks_on_sigterm(runservice: RunserviceStandIn, tmp_path: Path) -> None:
    pid_file, late = tmp_path / "step.pid", tmp_path / "late"
    command = f"echo $$ > {pid_file}; {wait_file('go', 30)}; touch {late}"
    runservice.add_task(make_task("t1", [run(command), run("echo no")]))
    process, url = start_cli(runservice, tmp_path)
    try:
        runservice.wait_task("t1", lambda task: step_phase(task, 0) is RUNNING)
        step_pid(pid_file)
        assert "task t1" in text_of(log_url(url, "t1", "setup"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    task = runservice.task("t1")
    assert task.phase is FAILED and task.error == "executor stopped"
    assert_utc(task.end_time)
    assert_finished_step(task.step_states[0], FAILED, 128 + signal.SIGTERM)
    assert task.step_states[1] == StepState()
    log = (task_dir(tmp_path, "t1") / "logs" / "steps" / "0.log").read_text()
    assert "killed by signal SIGTERM" in log and "stopped (executor stopped)" in log
    (task_dir(tmp_path, "t1") / "workspace" / "go").touch()
    time.sleep(0.3)  # a step still running would see "go" within 0.02 s
    assert not late.exists()


def test_unassigned_tasks_lose_their_folder_once_not_running(
    runservice: RunserviceStandIn, executors: MakeExecutor, tmp_path: Path
) -> None:
    leftover = task_dir(tmp_path, "old-task") / "workspace"
    leftover.mkdir(parents=True)
    runservice.add_task(make_task("done", [run("echo done")]))
    runservice.add_task(make_task("busy", [run(wait_file("go"))]))
    executor = executors(start=False)
    executor.run_once()
    assert not leftover.parent.exists()
    assert runservice.wait_finished("done").phase is SUCCESS
    runservice.wait_task("busy", lambda task: task.phase is RUNNING)
    executor.run_once()
    assert task_dir(tmp_path, "done").is_dir()  # still assigned: the runservice fetches its data first

    runservice.remove_task("done")
    runservice.remove_task("busy")
    executor.run_once()
    assert not task_dir(tmp_path, "done").exists()
    assert task_dir(tmp_path, "busy").is_dir()  # still running
    (task_dir(tmp_path, "busy") / "workspace" / "go").touch()

    def gone() -> bool:
        executor.run_once()
        return not task_dir(tmp_path, "busy").exists()

    wait_until(gone, "the finished task's folder removed")


def test_lost_status_reports_are_sent_again(runservice: RunserviceStandIn, executors: MakeExecutor) -> None:
    runservice.fail_task_reports = True
    runservice.add_task(make_task("t1", [run("echo hi")]))
    executor = executors(start=False)
    executor.run_once()
    # start, step start, step end, task end: all four answered with 500
    wait_until(lambda: runservice.rejected_reports == 4, "four rejected reports")
    assert runservice.task("t1").phase is NOTSTARTED
    runservice.fail_task_reports = False
    executor.run_once()
    task = runservice.task("t1")
    assert task.phase is SUCCESS
    assert_finished_step(task.step_states[0], SUCCESS, 0)
    reports = len(runservice.task_reports)
    executor.run_once()
    assert len(runservice.task_reports) == reports  # the copies agree: nothing more sent


def test_unreachable_runservice(tmp_path: Path) -> None:
    closed = RunserviceStandIn()
    url = closed.url
    closed.stop()  # never started: the port is free again
    executor = Executor(url, tmp_path, executor_id=EXECUTOR_ID, interval=0.02)
    with pytest.raises(ServiceError, match="failed"):
        executor.run_once()
    executor.start()
    time.sleep(0.2)  # some failing iterations
    executor.stop()
    executor.run_once()  # nothing once stopped


def test_invalid_settings(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdError):
        Executor("http://127.0.0.1:1", "/nonexistent", executor_id="../x")
    with pytest.raises(ValueError, match="active_tasks_limit"):
        Executor("http://127.0.0.1:1", "/nonexistent", executor_id="e", active_tasks_limit=0)
    with pytest.raises(SystemExit):
        main(
            ["--runservice", "http://127.0.0.1:1", "--data", "/nonexistent", "--id", "e", "--listen", "nope"]
        )
    with pytest.raises(SystemExit):
        main(["--runservice", "http://127.0.0.1:1", "--data", "/nonexistent", "--id", "e", "--limit", "0"])
    assert main(["--runservice", "http://127.0.0.1:1", "--data", str(tmp_path), "--id", ".bad"]) == 2


# -- the executor's HTTP API


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        (LOG.path(task_id=".hidden", step="setup"), 400, "bad_request"),
        (LOG.path(task_id="a b", step="setup"), 400, "bad_request"),
        (LOG.path(task_id="../../etc", step="setup"), 400, "bad_request"),  # one segment: a bad id
        (LOG.path(task_id="t1", step="x"), 400, "bad_request"),
        (LOG.path(task_id="t1", step=-1), 400, "bad_request"),
        (LOG.path(task_id="t1", step="01"), 400, "bad_request"),
        (LOG.path(task_id="t1", step=1234567890), 400, "bad_request"),
        (ARCHIVE.path(task_id="t1", step="setup"), 400, "bad_request"),
        (LOG.path(task_id="t1", step="setup"), 404, "not_exist"),
        (LOG.path(task_id="t1", step=0), 404, "not_exist"),
        (ARCHIVE.path(task_id="t1", step=0), 404, "not_exist"),
        ("/api/v1/tasks/t1", 404, "not_exist"),  # no route
        ("/nothing", 404, "not_exist"),
    ],
)
def test_http_errors_are_json(executors: MakeExecutor, path: str, status: int, kind: str) -> None:
    executor = executors()
    response = get(executor.url + path)
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.data)
    assert body["kind"] == kind and body["message"]


@pytest.mark.parametrize("kind", ["log", "archive"])
@pytest.mark.parametrize(
    ("step", "named"),
    [
        ("01", "'01'"),
        ("-1", "'-1'"),
        ("+1", "'+1'"),
        (" 1", "' 1'"),
        ("x", "'x'"),
        ("1234567890", "'1234567890'"),
    ],
)
def test_a_step_breaking_the_rule_is_a_400_naming_it(
    executors: MakeExecutor, kind: str, step: str, named: str
) -> None:
    """The runservice's rule (runstore.ids.parse_step): a decimal int >= 0 without leading zeros."""
    executor = executors()
    response = get(executor.url + routes[kind].path(task_id="t1", step=step))
    body = json.loads(response.data)
    assert (response.status, body["kind"]) == (400, "bad_request"), body
    assert f"invalid step {named}" in body["message"]


def test_http_serves_only_get(tmp_path: Path) -> None:
    # No runservice answers this executor, so its loop never removes the unassigned t1.
    executor = Executor("http://127.0.0.1:1", tmp_path / "data", executor_id=EXECUTOR_ID, interval=0.05)
    executor.start()
    try:
        log = task_dir(tmp_path, "t1") / "logs" / "setup.log"
        log.parent.mkdir(parents=True)
        log.write_bytes(b"x" * 200_000)
        assert get(log_url(executor.url, "t1", "setup")).data == b"x" * 200_000
        response = get(log_url(executor.url, "t1", "setup"), method="DELETE")
        assert response.status == 405 and json.loads(response.data)["kind"] == "bad_request"
    finally:
        executor.stop()


def test_stop_before_start_and_twice(tmp_path: Path) -> None:
    executor = Executor("http://127.0.0.1:1", tmp_path, executor_id=EXECUTOR_ID)
    assert executor.url.startswith("http://127.0.0.1:")
    executor.stop()
    executor.stop()
    with pytest.raises(RuntimeError):
        executor.start()
