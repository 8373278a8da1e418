"""What one request or one run may hold (docs/runservice.md, "Limits"), against real servers.

Graph walks are measured by counting what they read (each dependency a walk reads is one
step of a budget that fails the test when spent), never by timing them.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import attrs
import pytest
import urllib3

from objstore import MemoryStorage
from runstore.contract import codec
from runstore.contract.errors import BadRequestError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    ArchiveRef,
    ExecutorStatus,
    FetchPhase,
    Run,
    RunConfig,
    RunTask,
    Step,
    StepKind,
    TaskConfig,
    TaskStatus,
)
from runstore.contract.routes import RunServiceRoutes
from runstore.runservice import api, runconfig, tasks
from runstore.runservice.api import RunServiceApp
from runstore.runservice.lease import LEASE_KEY
from runstore.runservice.service import RunService

GROUP = "/project/p1/branch/main"
R = RunServiceRoutes
RUNS = f"{R.create_run.path()}?group={GROUP}"
EXECUTOR = R.put_executor.path(executor_id="ex1")
N = 200  # tasks, each depending on all earlier ones: 19,900 dependencies, within the limit
EDGES = N * (N - 1) // 2
RUN = Step(StepKind.RUN, command="true")
SAVE = Step(StepKind.SAVE_TO_WORKSPACE, paths=["out"])


class BudgetSpent(Exception):
    """A walk read more dependencies than its budget: it is not linear."""


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self) -> None:
        self.spent += 1
        if self.spent > self.limit:
            raise BudgetSpent(f"more than {self.limit} reads")


class CountingList(list[str]):
    """A ``depends`` list whose every item read spends one step of a budget."""

    def __init__(self, items: list[str], budget: Budget) -> None:
        super().__init__(items)
        self.budget = budget

    def __iter__(self) -> Iterator[str]:
        for item in super().__iter__():
            self.budget.spend()
            yield item


def name(index: int) -> str:
    return f"t{index:03d}"


def dense_config(count: int, budget: Budget | None = None) -> RunConfig:
    """``count`` tasks, each saving an archive and depending on all earlier ones."""
    configs = []
    for index in range(count):
        depends = [name(earlier) for earlier in range(index)]
        configs.append(TaskConfig(name(index), [SAVE], CountingList(depends, budget) if budget else depends))
    return RunConfig(configs)


@pytest.fixture
def service() -> Iterator[RunService]:
    """A runservice holding its store's lease, whose loops the test drives."""
    service = RunService(MemoryStorage()).start(loops=False)
    yield service
    service.stop()


@pytest.fixture
def server(service: RunService) -> Iterator[str]:
    thread = ServerThread(RunServiceApp(service)).start()
    yield thread.url
    thread.stop()


def call(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, object]]:
    response = urllib3.request(method, url, body=body, retries=False, timeout=30)
    return response.status, json.loads(response.data)


def keys(service: RunService) -> list[str]:
    """The keys in the store, but the lease's."""
    return sorted(entry.key for entry in service.state.storage.list() if entry.key != LEASE_KEY)


# -- the dependency graph ----------------------------------------------------------------


def test_workspace_of_a_dense_graph_reads_each_dependency_once(service: RunService) -> None:
    """Regression: the walk was exponential (task 25 took ~15 s, task 27 ~55 s)."""
    budget = Budget(N + EDGES)
    run = Run(
        id="run-1",
        group=GROUP,
        cache_group="projects/p1",
        tasks=[
            RunTask(f"id-{name(index)}", name(index), [SAVE], CountingList(list(config.depends), budget))
            for index, config in enumerate(dense_config(N).tasks)
        ],
    )
    workspace = tasks.workspace_of(run, run.tasks[-1])
    assert workspace == [ArchiveRef(f"id-{name(index)}", 0) for index in range(N - 1)]
    assert budget.spent <= EDGES  # each task's dependencies read once
    budget.spent = 0
    assert tasks.parents_first(run) == run.tasks
    assert budget.spent <= EDGES


def test_walks_keep_parents_ancestors_first() -> None:
    def task(task_name: str, *depends: str) -> RunTask:
        return RunTask(f"id-{task_name}", task_name, [SAVE], list(depends))

    run = Run(
        id="run-1",
        group=GROUP,
        cache_group="projects/p1",
        tasks=[task("d", "b", "c"), task("c", "a"), task("b", "a"), task("a"), task("e")],
    )
    assert [t.name for t in tasks.ancestors(run, run.tasks[0])] == ["a", "b", "c"]
    assert [t.name for t in tasks.parents_first(run)] == ["a", "b", "c", "d", "e"]


def test_creating_and_scheduling_a_dense_run_is_linear(
    service: RunService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking the config and assigning its last task read O(tasks + dependencies)."""
    # the checks, the cycle walk, and the encodings of each write of the run: the runservice
    # keeps the run it created in memory, so each write encodes the config's lists again
    budget = Budget(10 * (N + EDGES))
    run = service.runs.create(dense_config(N, budget), GROUP)
    assert budget.spent <= 5 * EDGES

    def succeeded(run: Run) -> Run:
        done = [
            attrs.evolve(
                t,
                status=TaskStatus.SUCCESS,
                registered=True,
                setup_log_fetch=FetchPhase.FINISHED,
                step_log_fetch=[FetchPhase.FINISHED for _ in t.steps],
                archive_fetch=dict.fromkeys(t.archive_fetch, FetchPhase.FINISHED),
            )
            for t in run.tasks[:-1]
        ]
        return attrs.evolve(run, tasks=[*done, run.tasks[-1]])

    service.state.runs.update(run.id, succeeded)
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 1))
    lookups = Budget(4 * (N + EDGES))
    by_name = Run.task

    def counted(self: Run, task_name: str) -> RunTask:
        lookups.spend()
        return by_name(self, task_name)

    monkeypatch.setattr(Run, "task", counted)
    service.scheduler.schedule_once()
    (assigned,) = service.executors.tasks_of("ex1")
    assert assigned.task_name == name(N - 1)
    assert assigned.workspace == [ArchiveRef(t.id, 0) for t in run.tasks[:-1]]


def test_iterative_cycle_check_names_the_cycle(service: RunService) -> None:
    chain = [TaskConfig(name(index), [RUN], [name(index + 1)]) for index in range(N - 1)]
    config = RunConfig([*chain, TaskConfig(name(N - 1), [RUN], [name(50)])])
    with pytest.raises(BadRequestError, match=r"cycle: t050 -> t051 -> .* -> t199 -> t050"):
        service.runs.create(config, GROUP)


# -- limits of a run, at its creation over HTTP ---------------------------------------


def over_limits() -> list[tuple[str, RunConfig, str]]:
    tasks_over = RunConfig([TaskConfig(f"t{i}", [RUN]) for i in range(runconfig.MAX_TASKS + 1)])
    steps_over = RunConfig([TaskConfig("a", [RUN] * (runconfig.MAX_STEPS + 1))])
    big = Step(StepKind.RUN, command="x" * runconfig.MAX_CONFIG_BYTES)
    return [
        ("tasks", tasks_over, f"at most {runconfig.MAX_TASKS} tasks (the task limit)"),
        ("steps", steps_over, f"at most {runconfig.MAX_STEPS} steps (the step limit)"),
        ("dependencies", dense_config(N + 1), f"at most {runconfig.MAX_DEPENDENCIES} dependencies"),
        ("size", RunConfig([TaskConfig("a", [big])]), f"at most {runconfig.MAX_CONFIG_BYTES} bytes"),
        ("twice", RunConfig([TaskConfig("a", [RUN]), TaskConfig("b", [RUN], ["a", "a"])]), "'a' twice"),
    ]


@pytest.mark.parametrize(("what", "config", "message"), over_limits(), ids=[o[0] for o in over_limits()])
def test_a_config_over_a_limit_is_a_400_naming_it(
    server: str, service: RunService, what: str, config: RunConfig, message: str
) -> None:
    before = keys(service)
    status, answer = call("POST", server + RUNS, codec.dumps(config))
    assert (status, answer.get("kind")) == (400, "bad_request"), answer
    assert message in str(answer["message"])
    assert keys(service) == before


def test_a_config_at_the_limits_is_accepted(server: str, service: RunService) -> None:
    assert N * (N - 1) // 2 <= runconfig.MAX_DEPENDENCIES < (N + 1) * N // 2
    status, answer = call("POST", server + RUNS, codec.dumps(dense_config(N)))
    assert status == 201, answer
    steps = RunConfig([TaskConfig("a", [RUN] * runconfig.MAX_STEPS)])
    assert call("POST", server + RUNS, codec.dumps(steps))[0] == 201


# -- request bodies: what arrives is counted -------------------------------------------


def send(
    url: str, method: str, path: str, chunks: list[bytes], headers: dict[str, str], *, chunked: bool
) -> tuple[int, dict[str, object]]:
    """A request through http.client; the body is sent chunked (``encode_chunked``) or as is.

    http.client does not chunk a body with a Content-Length header: that one is chunked here.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        if chunked and "Content-Length" in headers:
            encoded = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks] + [b"0\r\n\r\n"]
            headers = {"Transfer-Encoding": "chunked", **headers}
            connection.request(method, path, body=iter(encoded), headers=headers)
        elif chunked:
            headers = {"Transfer-Encoding": "chunked", **headers}
            connection.request(method, path, body=iter(chunks), headers=headers, encode_chunked=True)
        else:
            connection.request(method, path, body=b"".join(chunks), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


CACHE = f"{R.save_cache.path()}?group=projects/p1&key=k1"
CACHE_LIMIT = 64 << 10


@pytest.fixture
def small_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "MAX_UPLOAD", CACHE_LIMIT)


@pytest.mark.parametrize(
    "headers", [{}, {"Content-Length": "10"}], ids=["chunked", "chunked-with-false-content-length"]
)
@pytest.mark.usefixtures("small_uploads")
def test_a_chunked_cache_upload_over_the_limit_is_a_413(
    server: str, service: RunService, headers: dict[str, str]
) -> None:
    """Regression: only Content-Length was checked, so a chunked upload had no limit."""
    before = keys(service)
    chunks = [b"x" * (16 << 10)] * 16  # 256 KiB, four times the limit
    status, answer = send(server, "PUT", CACHE, chunks, headers, chunked=True)
    assert (status, answer.get("kind")) == (413, "too_large"), answer
    assert f"over the limit of {CACHE_LIMIT} bytes" in str(answer["message"])
    assert keys(service) == before  # nothing saved, not even a part
    ok, saved = send(server, "PUT", CACHE, [b"y" * 1000] * 8, {}, chunked=True)  # still serving
    assert (ok, saved) == (200, {"saved": True})


@pytest.mark.usefixtures("small_uploads")
def test_cache_uploads_up_to_the_limit_are_saved_whole(server: str, service: RunService) -> None:
    data = [bytes([i]) * (CACHE_LIMIT // 8) for i in range(8)]  # exactly the limit
    assert send(server, "PUT", CACHE, data, {}, chunked=True) == (200, {"saved": True})
    response = urllib3.request("GET", server + CACHE, retries=False, timeout=30)
    assert response.status == 200 and response.data == b"".join(data)
    too_long = [b"z" * (CACHE_LIMIT + 1)]
    status, answer = send(server, "PUT", CACHE.replace("k1", "k2"), too_long, {}, chunked=False)
    assert (status, answer.get("kind")) == (413, "too_large")
    assert f"of {CACHE_LIMIT + 1} bytes is over the limit" in str(answer["message"])


def test_a_chunked_json_body_over_the_limit_is_a_413(server: str, service: RunService) -> None:
    chunks = [b" " * (64 << 10)] * 24  # 1.5 MiB of whitespace, sent chunked
    status, answer = send(server, "PUT", EXECUTOR, chunks, {}, chunked=True)
    assert (status, answer.get("kind")) == (413, "too_large"), answer
    assert "over the limit of 1048576 bytes" in str(answer["message"])
    status, answer = call("PUT", server + EXECUTOR, b" " * (2 << 20))
    assert (status, answer.get("kind")) == (413, "too_large")
    assert keys(service) == []


@pytest.mark.usefixtures("small_uploads")
def test_a_malformed_chunked_body_is_a_400(server: str, service: RunService) -> None:
    parts = urlsplit(server)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=30) as sock:
        sock.sendall(
            f"PUT {CACHE} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"zz\r\nabc\r\n0\r\n\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        for _ in range(1000):
            data = sock.recv(1 << 16)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert keys(service) == []


# -- JSON nesting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 10_000],
    ids=["arrays", "objects", "unclosed"],
)
def test_deeply_nested_json_is_a_400_and_the_server_keeps_serving(
    server: str, service: RunService, body: bytes
) -> None:
    """Regression: json.loads recursed until RecursionError, answered as a 500."""
    for method, path in ((R.put_executor.method, EXECUTOR), (R.create_run.method, RUNS)):
        status, answer = call(method, server + path, body)
        assert (status, answer.get("kind")) == (400, "bad_request"), answer
        assert f"over the limit of {codec.MAX_DEPTH}" in str(answer["message"])
    status, answer = call("PUT", server + EXECUTOR, b'{"listen_url": "u", "active_tasks_limit": 1}')
    assert status == 200 and answer["id"] == "ex1"


def test_nesting_depth_skips_strings() -> None:
    assert codec.nesting_depth('["[[[", "\\"[[{", {"a": [1]}]') == 3
    assert codec.nesting_depth('"]]]" 1') == 0
    limit = "[" * codec.MAX_DEPTH + "]" * codec.MAX_DEPTH
    assert codec.loads(list, limit.encode()) == json.loads(limit)
    with pytest.raises(ValueError, match="over the limit"):
        codec.loads(list, f"[{limit}]".encode())
    assert codec.loads(dict, '{"k": "\u00e9[["}'.encode("utf-16")) == {"k": "\u00e9[["}
