"""The HTTP contract: one route table per server, used by the server, its typed client and the tests."""

from __future__ import annotations

import ast
import inspect
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from objstore import MemoryStorage
from runstore.contract.clients import ExecutorClient, RunServiceClient
from runstore.contract.errors import ErrorKind, InternalError, RemoteServiceError
from runstore.contract.http.client import ServiceClient, UnreachableError
from runstore.contract.http.server import JsonApp, Request, Response, ServerThread, json_response
from runstore.contract.model import RunConfig, RunPhase, Step, StepKind, TaskConfig
from runstore.contract.routes import ExecutorRoutes, Route, RunServiceRoutes, routes_of
from runstore.executor.app import ExecutorApp
from runstore.executor.executor import Executor
from runstore.runservice.api import RunServiceApp, serve
from runstore.runservice.service import RunService

ROOT = Path(__file__).resolve().parent.parent
TABLES = [(RunServiceRoutes, RunServiceApp, RunServiceClient), (ExecutorRoutes, ExecutorApp, ExecutorClient)]


# -- routes ------------------------------------------------------------------------------


def test_a_path_encodes_each_value_whole() -> None:
    route = Route("GET", "/api/v1/runs/<run_id>/tasks/<task_name>/logs/<step>", None)
    assert route.names == ("run_id", "task_name", "step")
    assert route.path(run_id="r1", task_name="build", step=0) == "/api/v1/runs/r1/tasks/build/logs/0"
    assert route.path(run_id="../..", task_name="a/b c", step="?x#y") == (
        "/api/v1/runs/..%2F../tasks/a%2Fb%20c/logs/%3Fx%23y"
    )


@pytest.mark.parametrize("values", [{}, {"run_id": "r1", "extra": "x"}, {"other": "r1"}])
def test_a_path_takes_exactly_its_placeholders(values: dict[str, str]) -> None:
    with pytest.raises(TypeError, match=r"/api/v1/runs/<run_id> takes \['run_id'\]"):
        RunServiceRoutes.get_run.path(**values)


def test_an_app_without_a_handler_for_a_route_is_refused() -> None:
    with pytest.raises(TypeError, match="Partial has no handler for the route"):

        class Partial(JsonApp):
            table = ExecutorRoutes

            def log(self, request: Request, task_id: str, step: str) -> Response:
                return json_response({})


@pytest.mark.parametrize(("table", "app", "client"), TABLES, ids=lambda t: getattr(t, "__name__", ""))
def test_each_route_has_a_handler_and_a_client_method(table: type, app: type, client: type) -> None:
    names = [name for name, _ in routes_of(table)]
    assert names and all(callable(getattr(app, name)) for name in names)
    methods = {name for name, value in vars(client).items() if inspect.isfunction(value)}
    assert set(names) <= methods
    assert methods - set(names) <= {"follow_log"}  # built on run_log: it asks again as the log grows
    rules = {(rule.route.method, rule.route.template) for rule in cast(type[JsonApp], app).rules}
    assert len(rules) == len(names)  # no two routes alike


def _string_constants(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_builds_a_url_path_by_hand() -> None:
    """Only the route tables spell the API's paths; everything else takes them from there."""
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sorted((ROOT / "runstore").rglob("*.py"))
        if path.name != "routes.py"
        for line, text in _string_constants(ast.parse(path.read_text()))
        if "/api/" in text
    ]
    assert found == []


# -- the typed clients -------------------------------------------------------------------


def test_the_users_half_round_trips_through_the_typed_client(tmp_path: Path) -> None:
    """Create, get, log, restart and delete a run through RunServiceClient, against a real
    runservice and executor; refusals come back as the server's kind."""
    service = RunService(MemoryStorage(), interval=0.05)
    server = serve(service)
    executor = Executor(server.url, tmp_path / "executor", executor_id="ex1", interval=0.05).start()
    client = RunServiceClient(server.url)
    config = RunConfig([TaskConfig("hello", [Step(StepKind.RUN, command="echo hello")])])
    try:
        run = client.create_run(config, "/project/p1/branch/main", cache_group="shared")
        assert (run.phase, run.cache_group) == (RunPhase.QUEUED, "groups/shared")
        with pytest.raises(RemoteServiceError) as refused:
            client.delete_run(run.id)
        assert (refused.value.kind, refused.value.status) == (ErrorKind.CONFLICT, 409)  # not finished
        deadline = time.monotonic() + 30
        while (run := client.get_run(run.id)).phase is not RunPhase.FINISHED:
            assert time.monotonic() < deadline, run
            time.sleep(0.05)
        with client.run_log(run.id, "hello", 0) as log:
            assert b"\nhello\n" in log.read()
        again = client.restart_run(run.id)
        assert again.restarted_from == run.id and again.tasks[0].shared
        client.delete_run(run.id)
        with pytest.raises(RemoteServiceError) as missing:
            client.get_run(run.id)
        assert missing.value.kind is ErrorKind.NOT_EXIST
        with client.run_log(again.id, "hello", 0) as log:
            assert b"\nhello\n" in log.read()  # shared: still there
    finally:
        client.close()
        executor.stop()
        server.stop()
        service.stop()


def test_the_executor_client_reads_what_the_executor_serves(tmp_path: Path) -> None:
    logs = tmp_path / "t1" / "logs"
    (logs / "steps").mkdir(parents=True)
    (logs / "setup.log").write_bytes(b"setup\n")
    (logs / "steps" / "0.log").write_bytes(b"x" * 300_000)
    server = ServerThread(ExecutorApp(tmp_path)).start()
    client = ExecutorClient(server.url)
    try:
        with client.log("t1", "setup") as log:
            assert log.read() == b"setup\n"
        with client.log("t1", 0) as log:
            assert log.read(10) == b"x" * 10  # closed before its end: the connection is dropped
        with client.log("t1", 0) as log:
            assert log.read() == b"x" * 300_000 and log.received == 300_000
        with pytest.raises(RemoteServiceError) as missing:
            client.archive("t1", 0)
        assert (missing.value.kind, missing.value.status) == (ErrorKind.NOT_EXIST, 404)
    finally:
        client.close()
        server.stop()


class OneAnswer:
    """A loopback server that answers every connection with the same raw bytes, then closes it."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(10)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for _ in range(10):
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                connection.recv(1 << 16)
                connection.sendall(self._answer)

    def close(self) -> None:
        self._socket.close()


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, "short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n", "garbled"),
    ],
)
def test_a_download_that_breaks_off_is_unreachable_never_short(answer: bytes, kind: str) -> None:
    server = OneAnswer(answer)
    client = ExecutorClient(server.url)
    try:
        with (
            pytest.raises(UnreachableError, match="the download broke off after") as raised,
            client.log("t1", 0) as log,
        ):
            log.read()
        assert raised.value.retryable, kind
    finally:
        client.close()
        server.close()


def test_a_malformed_answer_is_an_internal_error_naming_the_route() -> None:
    server = OneAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{not json")
    client = RunServiceClient(server.url)
    try:
        with pytest.raises(InternalError, match="/api/v1/runs/<run_id> with a malformed"):
            client.get_run("r1")
    finally:
        client.close()
        server.close()


def test_no_answer_is_unreachable_and_retryable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = ServiceClient(f"http://127.0.0.1:{port}")
    with pytest.raises(UnreachableError) as raised:
        client.request(RunServiceRoutes.get_run, {"run_id": "r1"})
    assert raised.value.retryable
    client.close()
