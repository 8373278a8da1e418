"""The client commands of ``runstore`` (runs, logs, gc, caches), each run as a process against a
runservice and an executor started as processes, over a posix store and S3; and what they print,
checked without processes."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest

from objstore import PosixStorage, Storage
from runstore.clock import now
from runstore.commands import output
from runstore.commands.caches import groups_table
from runstore.commands.runs import run_details, runs_table
from runstore.contract.auth import new_token
from runstore.contract.clients import RunServiceClient
from runstore.contract.codec import to_data
from runstore.contract.errors import RemoteServiceError
from runstore.contract.model import (
    CacheGroupCaches,
    CacheInfo,
    CollectionReport,
    ExecutorTaskPhase,
    Run,
    RunConfig,
    RunPhase,
    RunResult,
    RunTask,
    Step,
    StepKind,
    StepState,
    TaskConfig,
    TaskStatus,
)
from tests.conftest import S3Endpoint
from tests.test_processes import ROOT
from tests.test_service_processes import (
    CLIENT_TOKEN,
    EXECUTOR_TOKEN_FILE,
    Store,
    aws_environment,
    read_log,
    secret_file,
    start_executor,
    start_runservice,
    wait_finished,
)
from tests.waiting import wait_for

CACHE_TTL_DAYS = "0.00001"
"""The runservice's --cache-ttl here: 0.864 s, so that a gc request expires the caches made
before (the collector's own passes never come: --collect-every stays an hour)."""
CACHE_TTL = timedelta(days=float(CACHE_TTL_DAYS))
GROUP = "/project/cli/"
"""The groups of the runs made before the tests; the tests' own runs are in LIVE (a restart's
run, in GROUP, is deleted again)."""
LIVE = "/project/live/branch/main"
KEPT, EXPIRING = "groups/cli-kept", "groups/cli-expiring"


@attrs.frozen
class Done:
    """A finished ``runstore`` process: its exit code, stdout (bytes) and stderr."""

    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()


def cli_env(token: str | None = CLIENT_TOKEN, **variables: str) -> dict[str, str]:
    """This environment without the ``RUNSTORE_*`` variables; ``$RUNSTORE_TOKEN`` is ``token``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RUNSTORE_")}
    if token is not None:
        env["RUNSTORE_TOKEN"] = token
    return {**env, **variables}


def cli(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Done:
    """``python -m runstore ARGS [--url URL]``, stdin not a terminal; never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "runstore", *args, *(["--url", url] if url is not None else [])],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        env=cli_env() if env is None else env,
    )
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return Done(done.returncode, done.stdout, stderr)


def refused(done: Done, code: int = 1) -> str:
    """The one line a refused command printed (on stderr, nothing on stdout)."""
    assert (done.code, done.out) == (code, b""), done
    if code == 1:
        assert done.err.startswith("runstore: ") and done.err.count("\n") == 1, done.err
    return done.err


def rows(text: str) -> list[list[str]]:
    """A table's lines after its header, split at runs of two spaces or more."""
    lines = text.splitlines()
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines[1:]]


# -- a runservice and an executor per store, with finished runs ------------------------------


@pytest.fixture(scope="module", params=["posix", "s3"])
def service_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """A fresh store for the module: a folder, or a prefix of a fresh bucket."""
    root: Storage
    if request.param == "posix":
        folder = tmp_path_factory.mktemp("store")
        root = PosixStorage(str(folder))
        try:
            yield Store(("--store", str(folder)), dict(os.environ), root)
        finally:
            root.close()
        return
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"objstore-test-{secrets.token_hex(6)}"
    endpoint.client().make_bucket(bucket)
    root = endpoint.storage(bucket)
    env = aws_environment(endpoint, tmp_path_factory.mktemp("home"))
    try:
        yield Store(("--store", f"s3://{bucket}/ci"), env, root, "ci/")
    finally:
        root.delete_many(entry.key for entry in root.list())
        root.close()
        endpoint.client().remove_bucket(bucket)


@attrs.frozen
class Served:
    url: str
    client: RunServiceClient
    folder: Path  # for the files the tests' steps wait for
    built: Run  # success; its build task saved three caches in KEPT
    failed: Run  # failed at its last step (exit code 3); saved a cache in EXPIRING
    linted: Run  # success, one task


@pytest.fixture(scope="module")
def served(service_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("cli")
    runservice = start_runservice(service_store, "--cache-ttl", CACHE_TTL_DAYS)
    executor = start_executor(runservice, folder / "executor", 4)
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
    save = [Step(StepKind.RUN, command="echo dependencies > deps.txt")] + [
        Step(StepKind.SAVE_CACHE, paths=["deps.txt"], keys=[key]) for key in ("deps-1", "deps-2", "tools-1")
    ]
    built = RunConfig(
        [
            TaskConfig(
                "build", [Step(StepKind.RUN, name="compile", command="printf 'compiling\\nlinked\\n'"), *save]
            ),
            TaskConfig("test", [Step(StepKind.RUN, command="echo tests passed")], ["build"]),
        ]
    )
    failed = RunConfig(
        [
            TaskConfig(
                "check",
                [
                    Step(StepKind.RUN, command="echo old > old.txt"),
                    Step(StepKind.SAVE_CACHE, paths=["old.txt"], keys=["old-1"]),
                    Step(StepKind.RUN, command="echo broken; exit 3"),
                ],
            )
        ]
    )
    linted = RunConfig([TaskConfig("lint", [Step(StepKind.RUN, command="echo clean")])])
    try:
        runs = [
            client.create_run(built, f"{GROUP}branch/main", cache_group="cli-kept"),
            client.create_run(failed, f"{GROUP}branch/dev", cache_group="cli-expiring"),
            client.create_run(linted, f"{GROUP}pr/7"),
        ]
        finished = [wait_fetched(client, run.id) for run in runs]
        yield Served(runservice.url, client, folder, *finished)
    finally:
        client.close()
        executor.stop()
        runservice.stop()


def wait_fetched(client: RunServiceClient, run_id: str) -> Run:
    """The run once it finished and every log of its tasks is in the store."""
    wait_finished(client, run_id)

    def fetched() -> Run | None:
        run = client.get_run(run_id)
        return run if all(task.fetched for task in run.tasks) else None

    return wait_for(f"the logs of run {run_id}", fetched)


def step_running(client: RunServiceClient, run_id: str, step: int = 0) -> Run | None:
    run = client.get_run(run_id)
    states = run.tasks[0].step_states
    return run if len(states) > step and states[step].phase is ExecutorTaskPhase.RUNNING else None


# -- runs --------------------------------------------------------------------------------


def test_runs_list_shows_the_runs_newest_first(served: Served) -> None:
    done = cli("runs", "list", "--group", GROUP, url=served.url)
    assert (done.code, done.err) == (0, "")
    lines = done.text.splitlines()
    assert lines[0].split() == ["ID", "GROUP", "PHASE", "RESULT", "CREATED", "DURATION", "TASKS"]
    expected = [served.linted, served.failed, served.built]
    table = rows(done.text)
    assert [row[0] for row in table] == [run.id for run in expected]
    for row, run in zip(table, expected, strict=True):
        assert row[1:5] == [run.group, "finished", run.result.value, output.when(run.creation_time)]
        assert row[5].endswith("s") and row[6] == f"{len(run.tasks)}/{len(run.tasks)}"

    as_json = cli("runs", "list", "--group", GROUP, "--json", url=served.url)
    assert json.loads(as_json.out) == to_data(served.client.list_runs(group_prefix=GROUP))


def test_runs_list_filters(served: Served) -> None:
    for options, expected in [
        (["--result", "failed"], [served.failed]),
        (["--result", "success"], [served.linted, served.built]),
        (["--phase", "finished", "--group", f"{GROUP}branch/"], [served.failed, served.built]),
        (["--phase", "running"], []),
    ]:
        done = cli("runs", "list", "--group", GROUP, *options, url=served.url)
        assert done.code == 0, done
        assert [row[0] for row in rows(done.text)] == [run.id for run in expected], options


def test_runs_list_pages_by_cursor(served: Served) -> None:
    first = cli("runs", "list", "--group", GROUP, "--limit", "2", url=served.url)
    assert [row[0] for row in rows(first.text)] == [served.linted.id, served.failed.id]
    assert first.err.startswith("runstore: more runs follow: --cursor ")
    cursor = first.err.split()[-1]
    rest = cli("runs", "list", "--group", GROUP, "--limit", "2", "--cursor", cursor, url=served.url)
    assert ([row[0] for row in rows(rest.text)], rest.err) == ([served.built.id], "")
    every = cli("runs", "list", "--group", GROUP, "--limit", "1", "--all", "--json", url=served.url)
    page = json.loads(every.out)
    assert [run["id"] for run in page["runs"]] == [served.linted.id, served.failed.id, served.built.id]
    assert (page["next"], every.err) == ("", "")
    one = json.loads(cli("runs", "list", "--group", GROUP, "--limit", "1", "--json", url=served.url).out)
    assert one == to_data(served.client.list_runs(group_prefix=GROUP, limit=1)) and one["next"]


def test_runs_show_gives_the_fields_tasks_and_steps(served: Served) -> None:
    run = served.failed
    done = cli("runs", "show", run.id, url=served.url)
    assert (done.code, done.err) == (0, "")
    text = done.text
    head, tasks, errors = text.split("\n\n")
    details = dict((part.strip() for part in line.split(":", 1)) for line in head.splitlines())
    assert details == {
        "id": run.id,
        "group": run.group,
        "cache group": EXPIRING,
        "phase": "finished",
        "result": "failed",
        "created": output.when(run.creation_time),
        "started": output.when(run.start_time),
        "ended": output.when(run.end_time),
        "duration": output.span(run.start_time, run.end_time, now()),
    }
    table = rows(tasks)
    task = run.task("check")
    assert table[0][:2] == ["check", "failed"] and table[0][2] == output.when(task.start_time)
    assert [row[0:2] for row in table[1:4]] == [
        ["0 run", "success"],
        ["1 save_cache", "success"],
        ["2 run", "failed"],
    ]
    assert table[1][-1] == "0" and table[3][-1] == "3"
    assert errors == f"check: {task.error}\n" and "exited with code 3" in task.error
    assert json.loads(cli("runs", "show", run.id, "--json", url=served.url).out) == to_data(
        served.client.get_run(run.id)
    )


def test_runs_restart_and_delete(served: Served) -> None:
    done = cli("runs", "restart", served.linted.id, url=served.url)
    assert done.code == 0 and done.err == "", done
    words = done.text.split()
    assert (
        words[:4] == ["restarted", served.linted.id, "as", words[3]] and "(1 of 1 tasks shared)" in done.text
    )
    again = wait_fetched(served.client, words[3])
    assert again.restarted_from == served.linted.id and again.result is RunResult.SUCCESS
    deleted = cli("runs", "delete", again.id, url=served.url)
    assert (deleted.code, deleted.text, deleted.err) == (0, f"deleted {again.id}\n", "")
    assert (
        refused(cli("runs", "show", again.id, url=served.url))
        == f"runstore: run {again.id!r} does not exist\n"
    )
    assert b"\nclean\n" in read_log(served.client, served.linted.id, "lint", 0)  # shared with it: kept


def test_runs_cancel_stops_a_running_step(served: Served) -> None:
    config = RunConfig(
        [
            TaskConfig("sleepy", [Step(StepKind.RUN, command="echo dozing; sleep 60")]),
            TaskConfig("after", [Step(StepKind.RUN, command="true")], ["sleepy"]),
        ]
    )
    run = served.client.create_run(config, LIVE)
    wait_for("the step to run", lambda: step_running(served.client, run.id))
    busy = refused(cli("runs", "delete", run.id, url=served.url))
    assert busy == f"runstore: run {run.id!r} is not finished: only a finished run can be deleted\n"
    done = cli("runs", "cancel", run.id, url=served.url)
    assert done.code == 0, done
    assert done.text == (
        f"cancelled {run.id}: 1 running task(s) being stopped, 1 not started task(s) cancelled;"
        " it finishes as stopped\n"
    )
    stopped = wait_finished(served.client, run.id)
    assert stopped.result is RunResult.STOPPED and stopped.cancelled
    assert [task.status for task in stopped.tasks] == [TaskStatus.FAILED, TaskStatus.CANCELLED]
    again = refused(cli("runs", "cancel", run.id, url=served.url))
    assert "is finished: only an unfinished run can be cancelled" in again


# -- logs --------------------------------------------------------------------------------


def test_logs_of_a_finished_task_are_its_bytes(served: Served) -> None:
    run, client = served.built, served.client
    step0 = read_log(client, run.id, "build", 0)
    assert b"compiling\nlinked\n" in step0
    done = cli("logs", run.id, "build", "0", url=served.url)
    assert (done.code, done.out, done.err) == (0, step0, "")
    with client.run_log(run.id, "build", "setup") as stream:
        setup = stream.read()
    assert cli("logs", run.id, "build", "setup", url=served.url).out == setup
    assert cli("logs", run.id, "build", "0", "--start", "5", url=served.url).out == step0[5:]

    every = cli("logs", run.id, "build", url=served.url)
    expected = b"==> setup <==\n" + setup
    titles = ['run "compile"', "run", "save_cache", "save_cache", "save_cache"]
    for index, title in enumerate(titles):
        expected += f"\n==> step {index} ({title}) <==\n".encode() + read_log(client, run.id, "build", index)
    assert (every.code, every.out) == (0, expected)

    assert (
        refused(cli("logs", run.id, "deploy", url=served.url))
        == f"runstore: run {run.id!r} has no task 'deploy'\n"
    )
    assert "the task has 5 step(s)" in refused(cli("logs", run.id, "build", "9", url=served.url))
    assert "--start N needs a STEP" in refused(
        cli("logs", run.id, "build", "--start", "5", url=served.url), 2
    )


def test_logs_follow_a_step_as_it_is_written(served: Served) -> None:
    release = served.folder / f"release-{secrets.token_hex(4)}"
    command = (
        f"echo first-line; for i in $(seq 600); do [ -f {release} ] && break; sleep 0.1; done; echo last-line"
    )
    run = served.client.create_run(
        RunConfig([TaskConfig("slow", [Step(StepKind.RUN, command=command)])]), LIVE
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "runstore", "logs", run.id, "slow", "0", "--follow", "--url", served.url],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    got: list[bytes] = []
    stdout = follower.stdout
    assert stdout is not None

    def read() -> None:
        for line in iter(stdout.readline, b""):
            got.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for("the first line", lambda: b"first-line\n" in b"".join(got))
        assert b"\nlast-line\n" not in b"".join(got)
        assert step_running(served.client, run.id) is not None and follower.poll() is None  # still writing
        release.touch()
        assert follower.wait(timeout=60) == 0
        reader.join(10)
    finally:
        release.touch()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.stderr is not None and follower.stderr.read() == b""
    fetched = wait_fetched(served.client, run.id)
    assert b"".join(got) == read_log(served.client, fetched.id, "slow", 0)
    assert b"\nfirst-line\nlast-line\nexit code 0\n" in b"".join(got)


# -- caches and gc -----------------------------------------------------------------------


def on_terminal(args: list[str], answer: bytes) -> tuple[int, str, str]:
    """``runstore ARGS`` with a terminal as stdin and stderr, answering its question with
    ``answer``; its exit code, stdout and what the terminal showed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "runstore", *args],
        cwd=ROOT,
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=cli_env(),
    )
    os.close(follower)
    shown = b""

    def read(until: bytes | None) -> bytes:
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (until is None or until not in data):
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 1024)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                data += chunk
            elif until is None and process.poll() is not None:
                break
        return data

    try:
        shown = read(b"[y/N] ")
        assert shown.endswith(b"[y/N] "), shown
        os.write(leader, answer + b"\n")
        stdout, _ = process.communicate(timeout=60)
        shown += read(None)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    return process.returncode, stdout.decode(), shown.decode().replace("\r\n", "\n")


def cache_keys(client: RunServiceClient, group: str) -> list[str]:
    (listed,) = client.list_caches(group)
    return [cache.key for cache in listed.caches]


def test_caches_list_delete_and_gc(served: Served) -> None:
    """One test: gc expires every cache older than the ttl, the ones listed and deleted here too."""
    client, url = served.client, served.url
    listed = {group.group: group for group in client.list_caches()}
    kept = listed[KEPT]
    assert [cache.key for cache in kept.caches] == ["deps-1", "deps-2", "tools-1"]
    assert [cache.key for cache in listed[EXPIRING].caches] == ["old-1"]

    groups = cli("caches", "list", url=url)
    assert (groups.code, groups.text.splitlines()[0].split()) == (0, ["GROUP", "CACHES", "SIZE"])
    table = {row[0]: row[1:] for row in rows(groups.text)}
    assert table[KEPT] == ["3", output.size(sum(cache.size for cache in kept.caches))]
    assert table[EXPIRING][0] == "1" and set(table) == set(listed)
    assert json.loads(cli("caches", "list", "--json", url=url).out) == to_data(client.list_caches())

    caches = cli("caches", "list", KEPT, url=url)
    assert caches.text.splitlines()[0].split() == ["KEY", "SIZE", "CREATED"]
    assert rows(caches.text) == [[c.key, output.size(c.size), output.when(c.created)] for c in kept.caches]
    assert json.loads(cli("caches", "list", KEPT, "--json", url=url).out) == to_data([kept])
    assert "invalid cache group 'projects/a/b'" in refused(cli("caches", "list", "projects/a/b", url=url), 2)

    for keys in (["deps-1"], []):  # not on a terminal, without --yes: refused, nothing asked of the service
        message = refused(cli("caches", "delete", KEPT, *keys, url=url))
        assert "stdin is not a terminal to ask on: pass --yes to delete them" in message
    code, out, shown = on_terminal(["caches", "delete", KEPT, "--url", url], b"n")
    assert (
        "delete every cache of groups/cli-kept: 3 cache(s)" in shown and "runstore: nothing deleted" in shown
    )
    assert (code, out) == (1, "")
    assert cache_keys(client, KEPT) == ["deps-1", "deps-2", "tools-1"]
    code, out, shown = on_terminal(["caches", "delete", KEPT, "deps-1", "--url", url], b"y")
    assert "delete 1 cache(s) of groups/cli-kept (deps-1)? [y/N] " in shown
    assert (code, out) == (0, "deleted 1 cache(s) of groups/cli-kept\n")
    assert cache_keys(client, KEPT) == ["deps-2", "tools-1"]

    some = cli("caches", "delete", KEPT, "deps-2", "nope", "--yes", url=url)
    assert (some.code, some.text) == (0, "deleted 1 cache(s) of groups/cli-kept; not found: nope\n")
    every = cli("caches", "delete", KEPT, "--yes", url=url)
    assert (every.code, every.text) == (0, "deleted 1 cache(s) of groups/cli-kept\n")
    assert cache_keys(client, KEPT) == []

    (old,) = listed[EXPIRING].caches
    wait_for("the cache to outlive the ttl", lambda: now() - old.created > CACHE_TTL + timedelta(seconds=0.2))
    gc = cli("gc", url=url)
    assert (gc.code, gc.err) == (0, "")
    counts = {line.split(":")[0]: int(line.split(":")[1]) for line in gc.text.splitlines()}
    assert list(counts) == [
        "runs deleted",
        "stale markers removed",
        "task areas deleted",
        "caches expired",
        "index entries removed",
    ]
    assert counts["caches expired"] == 1 and counts["runs deleted"] == 0  # old-1: KEPT is empty by now
    assert cache_keys(client, EXPIRING) == []
    again = json.loads(cli("gc", "--json", url=url).out)
    assert again == to_data(CollectionReport())  # nothing left to remove


# -- errors ------------------------------------------------------------------------------


def test_an_unknown_run_is_one_line(served: Served) -> None:
    for args in (
        ["runs", "show", "run-nope"],
        ["runs", "restart", "run-nope"],
        ["logs", "run-nope", "build"],
    ):
        assert refused(cli(*args, url=served.url)) == "runstore: run 'run-nope' does not exist\n", args


def test_the_token_comes_from_a_file_or_the_environment_and_must_be_right(served: Served) -> None:
    url = served.url
    none = refused(cli("runs", "list", url=url, env=cli_env(token=None)))
    hint = "give --token-file FILE or set $RUNSTORE_TOKEN"
    assert none == f"runstore: the runservice at {url} needs a client token: {hint}\n"
    wrong = refused(cli("runs", "list", url=url, env=cli_env(token=new_token())))
    assert f"the runservice at {url} does not know the token of $RUNSTORE_TOKEN" in wrong
    executor = refused(cli("gc", "--token-file", str(EXECUTOR_TOKEN_FILE), url=url, env=cli_env(token=None)))
    assert (
        f"refused the token of --token-file {EXECUTOR_TOKEN_FILE}: "
        "this request takes client tokens, not executor tokens"
        in executor
    )
    from_file = cli(
        "runs", "list", "--token-file", str(secret_file(CLIENT_TOKEN)), url=url, env=cli_env(new_token())
    )
    assert from_file.code == 0 and served.built.id in from_file.text  # the file wins over the variable
    missing = refused(cli("runs", "list", "--token-file", "/nonexistent/token", url=url))
    assert "cannot read '/nonexistent/token'" in missing
    from_variable = cli("runs", "show", served.built.id, env=cli_env(RUNSTORE_URL=url))
    assert from_variable.code == 0 and served.built.id in from_variable.text


def test_an_unreachable_runservice_is_one_line_naming_its_url() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    for args in (["runs", "list"], ["gc"], ["caches", "delete", KEPT, "--yes"]):
        assert (
            refused(cli(*args, url=url))
            == f"runstore: cannot reach the runservice at {url}: connection refused\n"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["runs"], "the following arguments are required: ACTION"),
        (["runs", "list", "--phase", "done"], "invalid choice: 'done'"),
        (["runs", "list", "--limit", "0"], "'0' is not a whole number >= 1"),
        (["runs", "show"], "the following arguments are required: RUN"),
        (["logs", "run-1"], "the following arguments are required: TASK"),
        (["logs", "run-1", "build", "01"], 'a step is a decimal int >= 0 without leading zeros, or "setup"'),
        (["gc", "--url", "localhost:8000"], "'localhost:8000' is not an http(s) URL"),
        (["gc", "--timeout", "0"], "'0' is not a number of seconds above 0"),
        (["gc", "--token", "secret"], "unrecognized arguments: --token secret"),
        (["caches", "delete"], "the following arguments are required: GROUP"),
        (["runs", "show", ".."], "invalid run id '..'"),
        (["caches", "delete", "projects/a/b"], "invalid cache group 'projects/a/b'"),
        (["caches", "delete", "groups/g", "a/b"], "invalid cache key 'a/b'"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    done = cli(*args)
    assert (done.code, done.out) == (2, b"") and message in done.err, done


# -- what the commands print -------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (-3.0, "0.0s"),
        (0.0, "0.0s"),
        (2.3, "2.3s"),
        (9.99, "9.9s"),
        (10.0, "10s"),
        (59.9, "59s"),
        (60.0, "1m00s"),
        (185.0, "3m05s"),
        (3599.0, "59m59s"),
        (3600.0, "1h00m"),
        (7380.0, "2h03m"),
        (86400.0, "1d00h"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_a_duration_is_short_and_cut(seconds: float | None, shown: str) -> None:
    assert output.duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        (3 << 40, "3.0 TiB"),
        (5 << 50, "5120.0 TiB"),
    ],
)
def test_a_size_is_in_binary_units(count: int, shown: str) -> None:
    assert output.size(count) == shown


def test_a_table_aligns_its_columns_without_trailing_spaces() -> None:
    assert output.table(["A", "LONGER", "C"], [["xyz", "1", ""], ["w", "22", "last"]]) == (
        "A    LONGER  C\nxyz  1\nw    22      last\n"
    )
    assert output.table(["ONLY"], []) == "ONLY\n"
    with pytest.raises(ValueError, match="a row has 1 cells, the headers 2"):
        output.table(["A", "B"], [["x"]])


def test_times_are_utc_and_spans_run_to_now() -> None:
    start = datetime(2025, 5, 4, 12, 12, 3, 900000, tzinfo=timezone(timedelta(hours=2)))
    assert output.when(start) == "2025-05-04 10:12:03"
    assert output.when(None) == "-"
    assert output.span(start, start + timedelta(seconds=75), start) == "1m15s"
    assert output.span(start, None, start + timedelta(seconds=4)) == "4.0s"  # not ended: to now
    assert output.span(None, None, start) == "-"
    assert output.fields([("id", "r1"), ("cache group", "")]) == "id:           r1\ncache group:\n"


def test_the_run_tables() -> None:
    created = datetime(2025, 5, 4, 10, 0, 0, tzinfo=UTC)
    steps = [Step(StepKind.RUN, name="compile", command="make"), Step(StepKind.SAVE_CACHE, keys=["k"])]
    task = RunTask(
        "task-1",
        "build",
        steps,
        status=TaskStatus.FAILED,
        start_time=created,
        end_time=created + timedelta(seconds=12),
        step_states=[StepState(ExecutorTaskPhase.FAILED, created, created + timedelta(seconds=12), 2)],
        error="the command exited with code 2",
        shared=True,
    )
    queued = RunTask("task-2", "test", [Step(StepKind.RUN, command="true")], ["build"])
    run = Run(
        "run-1",
        "/project/p1/branch/main",
        "projects/p1",
        [task, queued],
        phase=RunPhase.FINISHED,
        result=RunResult.FAILED,
        creation_time=created,
        start_time=created,
        end_time=created + timedelta(seconds=13),
        restarted_from="run-0",
    )
    assert run_details(run) == (
        "id:           run-1\n"
        "group:        /project/p1/branch/main\n"
        "cache group:  projects/p1\n"
        "phase:        finished\n"
        "result:       failed\n"
        "created:      2025-05-04 10:00:00\n"
        "started:      2025-05-04 10:00:00\n"
        "ended:        2025-05-04 10:00:13\n"
        "duration:     13s\n"
        "restarts:     run-0\n"
        "\n"
        "TASK / STEP        STATUS          START                END                  DURATION  EXIT\n"
        "build              failed, shared  2025-05-04 10:00:00  2025-05-04 10:00:12  12s\n"
        '  0 run "compile"  failed          2025-05-04 10:00:00  2025-05-04 10:00:12  12s       2\n'
        "  1 save_cache     notstarted      -                    -                    -\n"
        "test               notstarted      -                    -                    -\n"
        "  0 run            notstarted      -                    -                    -\n"
        "\n"
        "build: the command exited with code 2\n"
    )
    assert runs_table([run]) == (
        "ID     GROUP                    PHASE     RESULT  CREATED              DURATION  TASKS\n"
        "run-1  /project/p1/branch/main  finished  failed  2025-05-04 10:00:00  13s       1/2\n"
    )
    caches = [CacheInfo("a", 1000, created), CacheInfo("b", 1048, created)]
    assert groups_table([CacheGroupCaches("projects/p1", caches), CacheGroupCaches("groups/g")]) == (
        "GROUP        CACHES  SIZE\nprojects/p1  2       2.0 KiB\ngroups/g     0       0 B\n"
    )


def test_the_typed_client_gets_the_400_of_a_bad_cache_group(served: Served) -> None:
    """The typed client's cache calls refuse a bad group with the runservice's 400."""
    with pytest.raises(RemoteServiceError) as bad:
        served.client.delete_caches("projects/../x")
    assert bad.value.status == 400 and "invalid cache group 'projects/../x'" in bad.value.remote_message
