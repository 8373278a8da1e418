"""Tokens and roles on every request: each endpoint of both servers, tried without a token,
with a wrong one, with another role's and (for executor endpoints) with another executor's.
None changes any document or object."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import urllib3

from objstore import MemoryStorage
from runstore.cache_groups import CacheGroup
from runstore.contract import codec
from runstore.contract.auth import BEARER, Identity, Role, TokenBook, TokenError, TokenFile, new_token
from runstore.contract.http.server import ServerThread
from runstore.contract.model import (
    ArchiveRef,
    ExecutorStatus,
    ExecutorTask,
    ExecutorTaskPhase,
    ExecutorTaskStatus,
    RunConfig,
    Step,
    StepKind,
    TaskConfig,
)
from runstore.contract.routes import ExecutorRoutes, Route, RunServiceRoutes, routes_of
from runstore.executor.app import ExecutorApp
from runstore.runservice.api import RunServiceApp
from runstore.runservice.lease import LEASE_KEY
from runstore.runservice.service import RunService

TOKENS = {name: new_token() for name in ("ex1", "ex2", "client", "runservice")}
BOOK = TokenBook.parse(
    f"executor ex1 {TOKENS['ex1']}\n"
    f"executor ex2 {TOKENS['ex2']}  # another executor\n"
    f"client ci {TOKENS['client']}\n"
    f"runservice rs {TOKENS['runservice']}\n"
)
WRONG = new_token()
GROUP = "/project/p1/branch/main"
CONFIG = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make")])])


@attrs.frozen
class Call:
    """A request as its rightful caller would send it."""

    route: Route
    values: dict[str, str | int]
    query: str = ""
    body: bytes | None = None

    def send(self, base: str, token: str | None) -> urllib3.BaseHTTPResponse:
        url = base + self.route.path(**self.values) + (f"?{self.query}" if self.query else "")
        headers = {"Authorization": BEARER + token} if token is not None else {}
        return urllib3.request(
            self.route.method, url, body=self.body, headers=headers, retries=False, timeout=30
        )


@attrs.define
class Served:
    service: RunService
    url: str
    calls: dict[str, Call]


@pytest.fixture
def served() -> Iterator[Served]:
    """A runservice taking BOOK's tokens, with a run, executors ex1 and ex2, and a task of ex1
    that restores an archive and uses a cache group."""
    service = RunService(MemoryStorage()).start(loops=False)
    run = service.runs.create(CONFIG, GROUP)
    for executor in ("ex1", "ex2"):
        service.executors.report(executor, ExecutorStatus("http://127.0.0.1:1", 1))
    task = ExecutorTask(
        run.tasks[0].id,
        run.id,
        "ex1",
        "build",
        CONFIG.tasks[0].steps,
        cache_group="projects/p1",
        workspace=[ArchiveRef("task-parent", 0)],
    )
    service.state.executor_tasks.create(task.id, task)
    service.state.store.write_archive("task-parent", 0, b"a tar")
    service.state.store.caches(CacheGroup("projects/p1")).save("deps", b"a cache")
    server = ServerThread(RunServiceApp(service, tokens=BOOK)).start()
    status = codec.dumps(ExecutorStatus("http://127.0.0.1:1", 1))
    report = codec.dumps(ExecutorTaskStatus(ExecutorTaskPhase.RUNNING))
    r = RunServiceRoutes
    calls = {
        "put_executor": Call(r.put_executor, {"executor_id": "ex1"}, body=status),
        "delete_executor": Call(r.delete_executor, {"executor_id": "ex2"}),
        "executor_tasks": Call(r.executor_tasks, {"executor_id": "ex1"}),
        "task_status": Call(r.task_status, {"task_id": task.id}, body=report),
        "archive": Call(r.archive, {"task_id": "task-parent", "step": 0}),
        "restore_cache": Call(r.restore_cache, {}, "group=projects/p1&key=deps"),
        "save_cache": Call(r.save_cache, {}, "group=projects/p1&key=new", b"another cache"),
        "create_run": Call(r.create_run, {}, f"group={GROUP}", codec.dumps(CONFIG)),
        "list_runs": Call(r.list_runs, {}),
        "get_run": Call(r.get_run, {"run_id": run.id}),
        "delete_run": Call(r.delete_run, {"run_id": run.id}),
        "restart_run": Call(r.restart_run, {"run_id": run.id}),
        "cancel_run": Call(r.cancel_run, {"run_id": run.id}),
        "run_log": Call(r.run_log, {"run_id": run.id, "task_name": "build", "step": 0}),
        "collect": Call(r.collect, {}),
        "list_caches": Call(r.list_caches, {}, "group=projects/p1"),
        "delete_caches": Call(r.delete_caches, {}, "group=projects/p1&key=deps"),
    }
    yield Served(service, server.url, calls)
    server.stop()
    service.stop()


def snapshot(service: RunService) -> dict[str, bytes]:
    storage = service.state.storage
    return {entry.key: storage.read_bytes(entry.key) for entry in storage.list() if entry.key != LEASE_KEY}


def rightful(route: Route) -> str:
    return TOKENS["ex1"] if route.role is Role.EXECUTOR else TOKENS["client"]


def other_role(route: Route) -> str:
    return TOKENS["client"] if route.role is Role.EXECUTOR else TOKENS["ex1"]


RUNSERVICE_ROUTES = [name for name, route in routes_of(RunServiceRoutes) if route.role is not None]
EXECUTOR_ONLY = [name for name, route in routes_of(RunServiceRoutes) if route.role is Role.EXECUTOR]


def test_every_route_of_the_runservice_is_tried(served: Served) -> None:
    assert sorted(served.calls) == sorted(RUNSERVICE_ROUTES)


@pytest.mark.parametrize("name", RUNSERVICE_ROUTES)
def test_refused_callers_change_nothing(served: Served, name: str, caplog: pytest.LogCaptureFixture) -> None:
    call = served.calls[name]
    before = snapshot(served.service)
    tries = [
        (None, 401, "no token"),
        (WRONG, 401, "an unknown token"),
        (other_role(call.route), 403, "tokens, not"),
    ]
    if call.route.role is Role.EXECUTOR:
        tries.append((TOKENS["ex2"], 403, "ex2"))
    tries.append((TOKENS["runservice"], 403, "not runservice tokens"))
    with caplog.at_level(logging.WARNING):
        for token, status, message in tries:
            answer = call.send(served.url, token)
            body = answer.json()
            assert (answer.status, body["kind"]) == (
                status,
                "unauthorized" if status == 401 else "forbidden",
            ), (
                token,
                body,
            )
            assert message in body["message"]
    assert snapshot(served.service) == before
    assert all(token not in caplog.text for token in [*TOKENS.values(), WRONG])  # refusals logged, not tokens


@pytest.mark.parametrize("name", RUNSERVICE_ROUTES)
def test_the_rightful_caller_passes(served: Served, name: str) -> None:
    call = served.calls[name]
    answer = call.send(served.url, rightful(call.route))
    assert answer.status not in (401, 403), answer.data


def test_health_needs_no_token(served: Served) -> None:
    answer = urllib3.request("GET", served.url + RunServiceRoutes.health.path(), retries=False)
    assert (answer.status, answer.json()) == (200, {"lease": True, "store": True})


def test_an_executor_sees_and_reports_only_its_own_tasks(served: Served) -> None:
    ex2 = TOKENS["ex2"]
    assert (
        Call(RunServiceRoutes.executor_tasks, {"executor_id": "ex2"}).send(served.url, ex2).json()["tasks"]
        == []
    )
    started = time.monotonic()
    poll = Call(RunServiceRoutes.executor_tasks, {"executor_id": "ex1"}, "after=x.0&wait=20")
    assert poll.send(served.url, ex2).status == 403  # refused before it waits
    assert time.monotonic() - started < 5
    report = served.calls["task_status"]
    assert report.send(served.url, ex2).status == 403  # ex1's task, reported by ex2
    assert report.send(served.url, TOKENS["ex1"]).status == 200


# -- the executor's API -------------------------------------------------------------------


@pytest.fixture
def executor_api(tmp_path: Path) -> Iterator[str]:
    logs = tmp_path / "t1" / "logs"
    logs.mkdir(parents=True)
    (logs / "setup.log").write_bytes(b"secret setup output\n")
    server = ServerThread(
        ExecutorApp(tmp_path, tokens=TokenBook.of(Role.RUNSERVICE, [TOKENS["runservice"]]))
    ).start()
    yield server.url
    server.stop()


@pytest.mark.parametrize(
    ("route", "values"),
    [
        (ExecutorRoutes.log, {"task_id": "t1", "step": "setup"}),
        (ExecutorRoutes.archive, {"task_id": "t1", "step": 0}),
    ],
)
def test_the_executor_serves_the_runservice_only(
    executor_api: str, route: Route, values: dict[str, Any]
) -> None:
    call = Call(route, values)
    for token, status in [(None, 401), (WRONG, 401), (TOKENS["client"], 401), (TOKENS["ex1"], 401)]:
        answer = call.send(executor_api, token)  # the executor knows only the runservice's tokens
        assert answer.status == status and b"secret" not in answer.data
    assert call.send(executor_api, TOKENS["runservice"]).status in (200, 404)


# -- tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("executor ex1", "line 1: expected '<role> <name> <token>'"),
        (f"admin root {new_token()}", "the role is one of executor, client, runservice, not 'admin'"),
        (f"executor ../x {new_token()}", "line 1: a name has only letters"),
        ("client ci short", "at least 16 printable ASCII characters"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line_not_the_token(text: str, message: str) -> None:
    with pytest.raises(TokenError) as refused:
        TokenBook.parse(f"# tokens\n\n{text}".replace("line 1", "line 3"), "tokens")
    assert message.replace("line 1", "line 3") in str(refused.value)
    if len(text.split()) == 3:
        assert text.split()[-1] not in str(refused.value)  # the token itself is never shown


def test_a_tokens_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    old, new = new_token(), new_token()
    path.write_text(f"client ci {old}\n")
    tokens = TokenFile(path)
    assert tokens.book.identify(old) == Identity(Role.CLIENT, "ci")
    time.sleep(0.01)
    path.write_text(f"client ci {old}\nclient ci {new}\n")  # rotating: both for a while
    assert tokens.book.identify(new) == Identity(Role.CLIENT, "ci")
    path.write_text(f"client ci {new}\n")
    assert tokens.book.identify(old) is None
    path.write_text("garbage\n")  # a broken file keeps the tokens read before
    assert tokens.book.identify(new) == Identity(Role.CLIENT, "ci")
