"""Tasks on one executor cannot read each other's environment or workspace.

docs/runservice.md, "Task isolation".

As root the executor runs each task's steps as a uid of its own; these tests run two tasks
at once on one executor against the runservice stand-in (tests/executor_runservice.py),
and have one try to read, list, write and signal what is the other's. Its data folder is
under /tmp (pytest's tmp_path sits in a folder other users may not search, which would
make every attempt fail for the wrong reason). The tests that need root are skipped
without it. Not root, the executor runs one task at a time unless told to share its user:
those tests fake ``os.geteuid``. The uids come from ``UIDS`` and some tests expect given
ones, so one run of this file at a time per machine. Every step that waits does so for at
most a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstore.contract.model import ArchiveRef, ExecutorTask, ExecutorTaskPhase, Step, StepKind
from runstore.executor.cli import main
from runstore.executor.executor import Executor, mapped, task_isolation
from runstore.executor.files import ArchiveError, TaskUser, extract_tar, write_tar
from runstore.executor.task import TaskUsers
from tests.executor_runservice import RunserviceStandIn
from tests.test_executor import (
    EXECUTOR_ID,
    MakeExecutor,
    files_of,
    make_task,
    run,
    tar_of,
    wait_file,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
UIDS = range(390_100, 390_110)  # not the default range: other executors on this machine may use that
SUCCESS = ExecutorTaskPhase.SUCCESS
NOTSTARTED = ExecutorTaskPhase.NOTSTARTED
SECRET = "s3cret-of-task-a"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running tasks as other users needs root")


# -- fixtures and helpers


@pytest.fixture
def runservice() -> Iterator[RunserviceStandIn]:
    standin = RunserviceStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def data() -> Iterator[Path]:
    """An executor's data folder that other users may search, as may its parents."""
    folder = Path(tempfile.mkdtemp(prefix="task-isolation-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def executors(runservice: RunserviceStandIn, data: Path) -> Iterator[MakeExecutor]:
    """Makes started executors on ``data`` with the task uids ``UIDS``; stops them after the test."""
    made: list[Executor] = []

    def make(**options: Any) -> Executor:
        options.setdefault("executor_id", EXECUTOR_ID)
        options.setdefault("interval", 0.05)
        options.setdefault("task_uids", UIDS)
        executor = Executor(runservice.url, data, **options)
        made.append(executor)
        return executor.start()

    yield make
    for executor in made:
        executor.stop()


def task_root(data: Path, task_id: str) -> Path:
    return data / "tasks" / task_id


def step_log(data: Path, task_id: str, index: int) -> str:
    path = task_root(data, task_id) / "logs" / "steps" / f"{index}.log"
    return path.read_text() if path.exists() else ""


def logged(text: str, name: str) -> str:
    """The value of the line ``<name> <value>`` or ``<name>=<value>`` of a log ("" if none)."""
    match = re.search(rf"^{name}[ =](.*)$", text, re.MULTILINE)
    return match[1] if match else ""


def step_running(task: ExecutorTask) -> bool:
    """Whether the task's first step runs (its folders are made by then)."""
    return bool(task.step_states) and task.step_states[0].phase is ExecutorTaskPhase.RUNNING


def ids_line() -> str:
    return 'echo "uid $(id -u)"; echo "gid $(id -g)"; echo "groups $(id -G)"'


def uid_of(data: Path, task_id: str, index: int) -> int:
    """The uid that step ``index`` (``run("id -u")``) printed."""
    return int(next(line for line in step_log(data, task_id, index).splitlines() if line.isdigit()))


# -- two tasks at once


@needs_root
def test_a_task_cannot_read_write_or_signal_what_is_another_tasks(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    a_steps = [
        run(f'echo "pid $$"; {ids_line()}; echo mine > a.txt; {wait_file("go", 15)}'),
        run('cat "$HOME/a.txt" && echo more >> a.txt && stat -c "mode %a owner %u" a.txt && ls -a'),
    ]
    runservice.add_task(make_task("task-a", a_steps, environment={"PROD_DB_PASSWORD": SECRET}))
    executor = executors(active_tasks_limit=2)
    wait_until(lambda: logged(step_log(data, "task-a", 0), "pid").isdigit(), "task A's pid in its log")
    a_pid = logged(step_log(data, "task-a", 0), "pid")
    a_workspace = task_root(data, "task-a") / "workspace"
    attempts = {
        "environ": 'cat "/proc/$A_PID/environ"',
        "cwd": 'ls "/proc/$A_PID/cwd/"',
        "ls": 'ls "$A_WS"',
        "cat": 'cat "$A_WS/a.txt"',
        "write": 'echo evil > "$A_WS/evil.txt"',
        "rm": 'rm -f "$A_WS/a.txt"',
        "signal": 'kill -0 "$A_PID"',
        "logs": 'cat "$A_ROOT/logs/steps/0.log"',
        "tasks": 'ls "$TASKS"',
        "own_environ": 'cat "/proc/$$/environ" > /dev/null',  # the controls: its own things it may
        "own_workspace": 'ls "$HOME" > /dev/null',
    }
    b_command = "; ".join(f'({command}); echo "{name}=$?"' for name, command in attempts.items())
    b_environment = {
        "A_PID": a_pid,
        "A_WS": str(a_workspace),
        "A_ROOT": str(task_root(data, "task-a")),
        "TASKS": str(data / "tasks"),
    }
    runservice.add_task(make_task("task-b", [run(f"{ids_line()}; {b_command}")], environment=b_environment))
    assert runservice.wait_finished("task-b").phase is SUCCESS
    assert runservice.task("task-a").phase is ExecutorTaskPhase.RUNNING  # they ran at once
    b_log = step_log(data, "task-b", 0)
    assert SECRET not in b_log and "mine" not in b_log, b_log
    results = {name: logged(b_log, name) for name in attempts}
    assert all(code.isdigit() for code in results.values()), b_log
    succeeded = [name for name, code in results.items() if code == "0" and not name.startswith("own")]
    assert succeeded == [], b_log  # every attempt at task A's things failed
    assert (results["own_environ"], results["own_workspace"]) == ("0", "0"), b_log

    (a_workspace / "go").touch()
    assert runservice.wait_finished("task-a").phase is SUCCESS
    a_log = step_log(data, "task-a", 1)
    a_uid, b_uid = int(logged(step_log(data, "task-a", 0), "uid")), int(logged(b_log, "uid"))
    assert "mine\n" in a_log and f"mode 600 owner {a_uid}" in a_log, a_log  # umask 077
    assert "evil.txt" not in a_log
    assert (a_workspace / "a.txt").read_text() == "mine\nmore\n"
    assert sorted(path.name for path in a_workspace.iterdir()) == ["a.txt", "go"]
    assert a_uid != b_uid and a_uid in UIDS and b_uid in UIDS
    for uid, text in ((a_uid, step_log(data, "task-a", 0)), (b_uid, b_log)):
        assert (logged(text, "gid"), logged(text, "groups")) == (str(uid), str(uid))
    assert "user: uid" in (task_root(data, "task-a") / "logs" / "setup.log").read_text()
    assert executor.isolation.own_users


@needs_root
def test_the_folders_of_a_task_have_the_modes_and_owners_of_the_layout(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    runservice.add_task(make_task("t1", [run("id -u")]))
    executors()
    assert runservice.wait_finished("t1").phase is SUCCESS
    uid = uid_of(data, "t1", 0)

    def owner_and_mode(path: Path) -> tuple[int, int, int]:
        status = os.lstat(path)
        assert stat.S_ISDIR(status.st_mode), path
        return status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)

    root = task_root(data, "t1")
    assert owner_and_mode(data / "tasks") == (0, 0, 0o711)
    assert owner_and_mode(root) == (0, 0, 0o711)
    assert owner_and_mode(root / "workspace") == (uid, uid, 0o700)
    for name in ("logs", "logs/steps", "archives", "tmp"):
        assert owner_and_mode(root / name) == (0, 0, 0o700), name
    for log in (root / "logs" / "setup.log", root / "logs" / "steps" / "0.log"):
        assert stat.S_IMODE(os.stat(log).st_mode) == 0o600, log


# -- restored files are the task's


@needs_root
def test_restored_archives_and_caches_are_the_tasks_own(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    runservice.archives[("t-src", 0)] = tar_of({"dir/sub/r.txt": b"restored\n"})
    runservice.caches["projects/p1"] = {"k1": tar_of({"c/cached.txt": b"cached\n", "c/link": "cached.txt"})}
    change = (
        'stat -c "%u:%g %n" dir dir/sub dir/sub/r.txt c c/cached.txt c/link; '
        "echo changed >> dir/sub/r.txt && rm c/cached.txt c/link && mkdir dir/sub/new && rmdir c && echo done"
    )
    steps = [
        Step(StepKind.RESTORE_WORKSPACE),
        Step(StepKind.RESTORE_CACHE, keys=["k1"]),
        run("id -u"),
        run(change),
        Step(StepKind.SAVE_TO_WORKSPACE, paths=["dir"]),
    ]
    runservice.add_task(make_task("t1", steps, workspace=[ArchiveRef("t-src", 0)]))
    executor = executors()
    task = runservice.wait_finished("t1")
    assert task.phase is SUCCESS, task.error
    uid = uid_of(data, "t1", 2)
    log = step_log(data, "t1", 3)
    for name in ("dir", "dir/sub", "dir/sub/r.txt", "c", "c/cached.txt", "c/link"):
        assert f"{uid}:{uid} {name}\n" in log, log
    assert "done" in log
    workspace = task_root(data, "t1") / "workspace"
    assert (workspace / "dir" / "sub" / "r.txt").read_text() == "restored\nchanged\n"
    assert not (workspace / "c").exists()
    archive = (task_root(data, "t1") / "archives" / "4.tar").read_bytes()
    assert files_of(archive)["dir/sub/r.txt"] == b"restored\nchanged\n"
    assert executor.isolation.own_users


@needs_root
def test_extraction_owns_what_it_makes_to_the_user_and_follows_no_symlink(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside.txt"
    workspace.mkdir()
    outside.write_text("root's\n")
    (workspace / "link").symlink_to(outside)  # a step left it: the member "link" replaces it
    archive = tmp_path / "a.tar"
    archive.write_bytes(tar_of({"link": b"member\n", "d/e/f.txt": b"f\n", "d/up": "../link"}))
    user = TaskUser(UIDS[0])
    assert extract_tar(archive, workspace, owner=user) == 3
    assert outside.read_text() == "root's\n" and os.lstat(outside).st_uid == 0
    for name in ("link", "d", "d/e", "d/e/f.txt", "d/up"):
        status = os.lstat(workspace / name)
        assert (status.st_uid, status.st_gid) == (user.uid, user.gid), name
    assert (workspace / "link").read_text() == "member\n"
    assert os.lstat(workspace).st_uid == 0  # what was there stays as it was


@needs_root
def test_a_task_cannot_have_another_users_file_archived(tmp_path: Path) -> None:
    """A hard link to (or a move of) another user's file in the workspace is not read with root's rights."""
    user = TaskUser(UIDS[0])
    workspace = tmp_path / "ws"
    (workspace / "mine").mkdir(parents=True)
    os.chown(workspace, user.uid, user.gid)
    os.chown(workspace / "mine", user.uid, user.gid)
    (workspace / "mine" / "f").write_text("mine\n")
    os.chown(workspace / "mine" / "f", user.uid, user.gid)
    (workspace / "shadow").write_text("root's secret\n")  # root's, as a hard link of /etc/shadow would be
    assert write_tar(workspace, ["mine"], tmp_path / "ok.tar", print, owner=user) == 2
    with pytest.raises(ArchiveError, match="shadow: it is uid 0's, not the task's"):
        write_tar(workspace, ["."], tmp_path / "no.tar", print, owner=user)
    assert not (tmp_path / "no.tar").exists()
    assert write_tar(workspace, ["."], tmp_path / "shared.tar", print) == 4  # no owner: as before


# -- processes


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is no zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] not in "ZX"


def kill_sleeps(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            if alive(pid) and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
                os.kill(pid, signal.SIGKILL)


@needs_root
def test_a_stopped_tasks_processes_are_killed_even_those_that_left_its_group(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    command = (
        'echo "shell $$"; sleep 20 & echo "child $!"; '
        '(setsid sleep 20 & echo "escaped $!"); i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done'
    )
    runservice.add_task(make_task("t1", [run(command)]))
    executors()
    names = ("shell", "child", "escaped")
    wait_until(lambda: all(logged(step_log(data, "t1", 0), name) for name in names), "the step's pids")
    pids = [int(logged(step_log(data, "t1", 0), name)) for name in names]
    try:
        assert all(alive(pid) for pid in pids)
        escaped = Path(f"/proc/{pids[2]}/stat").read_text().rpartition(")")[2].split()
        assert int(escaped[2]) != pids[0]  # not in the step's process group: the group kill misses it
        runservice.remove_task("t1")  # the executor stops the task: SIGTERM to the step's group
        wait_until(lambda: not any(alive(pid) for pid in pids), "the end of the task's processes", 8.0)
    finally:
        kill_sleeps(pids)


@needs_root
def test_what_a_task_leaves_running_is_killed_when_it_ends(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    runservice.add_task(make_task("t1", [run('(setsid sleep 20 & echo "escaped $!")'), run("true")]))
    executors()
    assert runservice.wait_finished("t1").phase is SUCCESS
    pid = int(logged(step_log(data, "t1", 0), "escaped"))
    try:
        wait_until(lambda: not alive(pid), "the end of the daemon the task left", 5.0)
        assert task_root(data, "t1").exists()  # the task is still there: it ended, and so did its processes
    finally:
        kill_sleeps([pid])


# -- uids: one a task, reused once the task is gone


@needs_root
def test_each_task_holds_a_uid_of_its_own_until_it_is_removed(
    runservice: RunserviceStandIn, executors: MakeExecutor, data: Path
) -> None:
    two = range(UIDS[0], UIDS[0] + 2)
    for task_id in ("t1", "t2"):
        runservice.add_task(make_task(task_id, [run("id -u")]))
    executor = executors(active_tasks_limit=3, task_uids=two)
    for task_id in ("t1", "t2"):
        assert runservice.wait_finished(task_id).phase is SUCCESS
    uids = {task_id: uid_of(data, task_id, 0) for task_id in ("t1", "t2")}
    assert sorted(uids.values()) == list(two)

    runservice.add_task(make_task("t3", [run("id -u")]))
    runservice.wait_caught_up(EXECUTOR_ID, polls=3)  # it saw the latest tasks, and waits on
    assert runservice.task("t3").phase is NOTSTARTED  # both uids are held: t1 and t2 still have folders

    runservice.remove_task("t1")  # fetched: its folder goes, and its uid is free again
    assert runservice.wait_finished("t3").phase is SUCCESS
    assert uid_of(data, "t3", 0) == uids["t1"]
    assert not task_root(data, "t1").exists()
    assert executor.isolation.own_users


@needs_root
def test_a_uid_is_held_machine_wide() -> None:
    first, second = TaskUsers(range(UIDS[0], UIDS[0] + 2)), TaskUsers(range(UIDS[0], UIDS[0] + 2))
    try:
        a = first.acquire("a")
        b = second.acquire("b")
        assert a is not None and b is not None and a != b  # two executors never share a uid
        assert first.acquire("a") == a  # a task keeps its uid
        first.release("a")
        assert second.acquire("c") == a  # ... until it is released
    finally:
        first.close()
        second.close()


@needs_root
def test_uids_of_earlier_folders_are_not_handed_out(runservice: RunserviceStandIn, data: Path) -> None:
    old = data / "tasks" / "old" / "workspace"
    old.mkdir(parents=True)
    os.chown(old, UIDS[0], UIDS[0])
    runservice.add_task(make_task("old", [run("id -u")], phase=ExecutorTaskPhase.SUCCESS))
    runservice.add_task(make_task("new", [run("id -u")]))
    executor = Executor(runservice.url, data, executor_id=EXECUTOR_ID, interval=0.05, task_uids=UIDS)
    try:
        executor.start()
        assert runservice.wait_finished("new").phase is SUCCESS
        assert uid_of(data, "new", 0) == UIDS[1]
    finally:
        executor.stop()


# -- not root, or told to share its user


def test_the_decision_of_how_tasks_run() -> None:
    root = task_isolation(is_root=True, shared_user=False, active_tasks_limit=4)
    assert (root.own_users, root.active_tasks_limit, root.warning) == (True, 4, "")
    alone = task_isolation(is_root=False, shared_user=False, active_tasks_limit=4)
    assert (alone.own_users, alone.active_tasks_limit) == (False, 1)
    assert "not running as root" in alone.warning and "one task at a time (not 4)" in alone.warning
    assert "--shared-user" in alone.warning
    for is_root in (True, False):
        shared = task_isolation(is_root=is_root, shared_user=True, active_tasks_limit=4)
        assert (shared.own_users, shared.active_tasks_limit) == (False, 4)
        assert "can read each other's" in shared.warning


def test_an_executor_that_is_not_root_runs_one_task_at_a_time(
    runservice: RunserviceStandIn,
    executors: MakeExecutor,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "runstore.executor")
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    for task_id in ("t1", "t2"):
        runservice.add_task(make_task(task_id, [run(f"id -u; {wait_file('go', 3)}")]))
    executor = executors(active_tasks_limit=2)
    assert (executor.isolation.own_users, executor.active_tasks_limit) == (False, 1)
    assert any("one task at a time (not 2)" in record.getMessage() for record in caplog.records)
    runservice.wait_task("t1", step_running)
    runservice.wait_caught_up(EXECUTOR_ID, polls=3)  # it saw the latest tasks, and waits on
    assert runservice.task("t2").phase is NOTSTARTED
    assert runservice.executors[EXECUTOR_ID].active_tasks_limit == 1
    (task_root(data, "t1") / "workspace" / "go").touch()
    assert runservice.wait_finished("t1").phase is SUCCESS
    runservice.wait_task("t2", step_running)
    (task_root(data, "t2") / "workspace" / "go").touch()
    assert runservice.wait_finished("t2").phase is SUCCESS
    assert runservice.max_running == 1
    assert "user: the executor's own" in (task_root(data, "t1") / "logs" / "setup.log").read_text()


def test_a_shared_user_keeps_the_limit(
    runservice: RunserviceStandIn, executors: MakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    executor = executors(active_tasks_limit=3, shared_user=True)
    assert (executor.isolation.own_users, executor.active_tasks_limit) == (False, 3)
    wait_until(lambda: EXECUTOR_ID in runservice.executors, "the executor's report")
    assert runservice.executors[EXECUTOR_ID].active_tasks_limit == 3


def test_the_command_line_warns_after_listening_first(runservice: RunserviceStandIn, data: Path) -> None:
    """Not root (os.geteuid faked in its process): a warning on stderr, and LISTENING first on stdout."""
    code = "import os, sys; os.geteuid = lambda: 65534; from runstore.executor.cli import main; "
    code += "sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "--runservice", runservice.url, "--data", str(data)]
    command += ["--id", EXECUTOR_ID, "--limit", "3", "--listen", "127.0.0.1:0", "--no-tokens"]  # a stand-in
    stderr_path = data / "executor.log"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20.0)
        first = process.stdout.readline() if ready else ""
        assert first.startswith("LISTENING http://127.0.0.1:"), first
        wait_until(lambda: EXECUTOR_ID in runservice.executors, "the executor's report")
        assert runservice.executors[EXECUTOR_ID].active_tasks_limit == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    warnings = [line for line in stderr_path.read_text().splitlines() if " WARNING " in line]
    assert any("one task at a time (not 3)" in line for line in warnings), warnings


def test_bad_task_uids_are_refused(tmp_path: Path) -> None:
    base = ["--runservice", "http://127.0.0.1:1", "--data", str(tmp_path), "--id", "e"]
    for text in ("0-10", "10-5", "x", "1-99999999999", "5"):
        with pytest.raises(SystemExit):
            main([*base, "--task-uids", text])
    for uids in (range(0, 10), range(5, 5), range(1, 10, 2)):
        with pytest.raises(ValueError, match="task uids"):
            Executor("http://127.0.0.1:1", tmp_path, executor_id="e", task_uids=uids)


def test_uids_must_be_mapped_in_the_user_namespace(tmp_path: Path) -> None:
    uid_map = tmp_path / "uid_map"
    uid_map.write_text("         0     100000      65536\n")  # a container's usual map
    assert mapped(range(1000, 2000), uid_map)
    assert not mapped(range(200_000, 300_000), uid_map)
    assert not mapped(range(65_000, 66_000), uid_map)
    uid_map.write_text("0 0 1000\n1000 5000 1000\n")
    assert mapped(range(0, 2000), uid_map) and not mapped(range(0, 2001), uid_map)
    assert mapped(range(200_000, 300_000), tmp_path / "none")  # no user namespaces: all are
