"""Attacks on the servers (docs/runservice.md, "Bounded waits"), with real servers on 127.0.0.1
and raw sockets: each one is answered or cut within its bound, holds no thread while it
waits, and leaves the server serving everyone else at once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import urllib3

from objstore import MemoryStorage, PosixStorage
from runstore.cache_groups import CacheGroup
from runstore.contract import codec
from runstore.contract.auth import BEARER, Role, TokenBook, new_token
from runstore.contract.http.server import THREADS, ServerThread
from runstore.contract.model import ExecutorStatus, ExecutorTask, RunConfig, Step, StepKind, TaskConfig
from runstore.contract.routes import ExecutorRoutes, RunServiceRoutes
from runstore.executor.app import ExecutorApp
from runstore.runservice import logs
from runstore.runservice.api import RunServiceApp
from runstore.runservice.service import RunService
from tests.test_server_bounds import address, answer_of

R = RunServiceRoutes
TOKENS = {name: new_token() for name in ("ex1", "client", "runservice")}
BOOK = TokenBook.parse(
    f"executor ex1 {TOKENS['ex1']}\nclient ci {TOKENS['client']}\nrunservice rs {TOKENS['runservice']}\n"
)
GROUP = "/project/p1/branch/main"
CACHE = f"{R.save_cache.path()}?group=projects/p1&key=deps"
PIECE = bytes(64 << 10)
BIG = 40 << 20  # the cache that slow readers ask for


@attrs.define
class Served:
    service: RunService
    server: ServerThread
    url: str


def serving(storage: Any, **bounds: float) -> Iterator[Served]:
    """A runservice taking BOOK's tokens, whose loops do not run, with executor ex1 registered
    and assigned a task of the cache group projects/p1."""
    service = RunService(storage).start(loops=False)
    service.executors.report("ex1", ExecutorStatus("http://127.0.0.1:1", 1))
    task = ExecutorTask(
        "task-1", "run-1", "ex1", "build", [Step(StepKind.RUN, command="make")], cache_group="projects/p1"
    )
    service.state.executor_tasks.create(task.id, task)
    server = ServerThread(RunServiceApp(service, tokens=BOOK), **bounds).start()  # type: ignore[arg-type]
    try:
        yield Served(service, server, server.url)
    finally:
        server.stop()
        service.stop()


@pytest.fixture
def served() -> Iterator[Served]:
    """A runservice taking BOOK's tokens, executor ex1 registered; its loops do not run."""
    yield from serving(MemoryStorage(), send_timeout=2.0, read_timeout=1.0, keep_alive_timeout=1.0)


def headers(token: str | None) -> dict[str, str]:
    return {"Authorization": BEARER + token} if token else {}


def request(
    method: str, url: str, token: str | None = None, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, float]:
    """A request on a new connection: its status and seconds."""
    started = time.monotonic()
    with urllib3.PoolManager(retries=False, timeout=timeout) as pool:
        response = pool.request(method, url, body=body, headers=headers(token))
    return response.status, time.monotonic() - started


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    connection = socket.socket()
    if receive_buffer is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(10)
    connection.connect(address(url))
    return connection


def head(method: str, path: str, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: {BEARER}{token}\r\n" if token else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n".encode()


def read_to_end(connection: socket.socket, within: float) -> tuple[int, float]:
    """Bytes read from ``connection`` until the server closed it, and when; AssertionError
    unless that was within ``within`` seconds."""
    started = time.monotonic()
    connection.settimeout(within)
    total = 0
    for _ in range(100_000):
        try:
            data = connection.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            return total, time.monotonic() - started
        total += len(data)
    raise AssertionError("the server kept sending")


def closed_within(sockets: list[socket.socket], within: float) -> float:
    """Seconds until the server closed every one of ``sockets`` (what they were sent is read)."""
    started = time.monotonic()
    open_ = set(sockets)
    with selectors.DefaultSelector() as selector:
        for connection in sockets:
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
        while open_ and (left := started + within - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(1 << 20)
                except (ConnectionResetError, BlockingIOError) as exc:
                    data = b"" if isinstance(exc, ConnectionResetError) else b"more"
                if not data:
                    open_.discard(ready)
                    selector.unregister(ready)
    assert not open_, f"{len(open_)} connection(s) still open after {within} s"
    return time.monotonic() - started


def close_all(sockets: list[socket.socket]) -> None:
    for connection in sockets:
        connection.close()


class Flood(threading.Thread):
    """Sends a chunked body of ``size`` bytes as fast as the connection takes it, until it breaks."""

    def __init__(self, connection: socket.socket, size: int) -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.size = size
        self.sent = 0
        self.error: OSError | None = None

    def run(self) -> None:
        frame = b"%x\r\n%s\r\n" % (len(PIECE), PIECE)
        try:
            while self.sent < self.size:
                self.connection.sendall(frame)
                self.sent += len(PIECE)
        except OSError as exc:
            self.error = exc


class Spools:
    """Counts the request bodies the server spools to temporary files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = tempfile.SpooledTemporaryFile

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr("tempfile.SpooledTemporaryFile", counted)


# -- 1. the token before the body ---------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKENS["client"]], ids=["no-token", "wrong-role"])
def test_a_body_without_the_right_token_is_refused_before_it_is_read(
    served: Served, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    spools = Spools(monkeypatch)
    size = 256 << 20
    with connect(served.url) as connection:
        connection.sendall(head("PUT", CACHE, token, "Transfer-Encoding: chunked\r\n"))
        flood = Flood(connection, size)
        tracemalloc.start()
        try:
            started = time.monotonic()
            flood.start()
            status, answer = answer_of(connection)
            seconds = time.monotonic() - started
            flood.join(10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert status == (401 if token is None else 403), answer
    assert json.loads(answer)["kind"] == ("unauthorized" if token is None else "forbidden")
    assert seconds < 1.0, seconds
    assert not flood.is_alive() and flood.error is not None  # the server closed the connection
    assert flood.sent < 64 << 20, flood.sent  # what the sockets' buffers hold, not the body
    assert spools.count == 0 and peak < 8 << 20, (spools.count, peak)
    print(
        f"\n256 MiB body, {'no token' if token is None else 'a client token'}: {status} in "
        f"{seconds * 1000:.0f} ms; {flood.sent >> 20} MiB sent before the server closed; "
        f"peak traced memory {peak >> 10} KiB, nothing spooled"
    )
    assert request("GET", served.url + R.health.path())[0] == 200


def test_the_executor_api_refuses_a_body_before_reading_it(tmp_path: Path) -> None:
    server = ServerThread(ExecutorApp(tmp_path, tokens=TokenBook.of(Role.RUNSERVICE, [TOKENS["runservice"]])))
    server.start()
    path = ExecutorRoutes.log.path(task_id="t1", step=0)
    try:
        for token, status in [(None, 401), (TOKENS["runservice"], 413)]:
            with connect(server.url) as connection:
                connection.sendall(head("GET", path, token, "Transfer-Encoding: chunked\r\n"))
                flood = Flood(connection, 256 << 20)
                started = time.monotonic()
                flood.start()
                answer = answer_of(connection)
                seconds = time.monotonic() - started
                flood.join(10)
            assert answer[0] == status and seconds < 1.0, (answer, seconds)
            assert flood.error is not None and flood.sent < 64 << 20, flood.sent
    finally:
        server.stop()


# -- 2. bodies streamed, within their limit and rate ---------------------------------------


def test_a_cache_upload_is_spooled_not_held_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spools = Spools(monkeypatch)
    size = 32 << 20
    for served in serving(PosixStorage(tmp_path / "store")):
        with connect(served.url) as connection:
            tracemalloc.start()
            try:
                connection.sendall(head("PUT", CACHE, TOKENS["ex1"], "Transfer-Encoding: chunked\r\n"))
                flood = Flood(connection, size)
                flood.run()
                connection.sendall(b"0\r\n\r\n")
                status, answer = answer_of(connection)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert (status, json.loads(answer)) == (200, {"saved": True})
        assert spools.count == 1 and peak < 8 << 20, (spools.count, peak)
        found = served.service.state.store.caches(CacheGroup("projects/p1")).restore(["deps"])
        assert found is not None
        with found.stream as stream:
            assert sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b"")) == size
        print(f"\na {size >> 20} MiB cache upload: peak traced memory {peak >> 10} KiB")


@pytest.mark.parametrize("pause", [0.3, None], ids=["trickle", "stall"])
def test_a_body_that_trickles_or_stalls_is_cut_off(served: Served, pause: float | None) -> None:
    body = codec.dumps(ExecutorStatus("http://127.0.0.1:1", 1))
    path = R.put_executor.path(executor_id="ex1")
    with connect(served.url) as connection:
        connection.sendall(head("PUT", path, TOKENS["ex1"], f"Content-Length: {len(body)}\r\n"))
        started = time.monotonic()
        cut = threading.Event()

        def trickle() -> None:
            for byte in body[:-1] if pause else body[:1]:  # never all of it
                with contextlib.suppress(OSError):
                    connection.sendall(bytes([byte]))
                if cut.wait(pause or 0):
                    return

        trickling = threading.Thread(target=trickle, daemon=True)
        trickling.start()
        try:
            status, answer = answer_of(connection)
            seconds = time.monotonic() - started
        finally:
            cut.set()
            trickling.join(5)
    assert status == 400 and "cannot read the body: it came too slowly" in json.loads(answer)["message"]
    assert 1.0 <= seconds < 3.0, seconds  # read_timeout 1 s and the bytes at MIN_RATE
    print(f"\n{'trickle' if pause else 'stall'}: cut after {seconds:.2f} s: {json.loads(answer)['message']}")


# -- 3. slow readers ----------------------------------------------------------------------


def test_slow_readers_hold_no_thread_and_are_cut_after_the_send_timeout(tmp_path: Path) -> None:
    threads = threading.active_count()
    for served in serving(PosixStorage(tmp_path / "store"), send_timeout=2.0):
        chunk = bytes(1 << 20)
        served.service.state.store.caches(CacheGroup("projects/p1")).save("deps", iter([chunk] * (BIG >> 20)))
        readers = [connect(served.url, receive_buffer=16 << 10) for _ in range(8)]
        try:
            for reader in readers:
                reader.sendall(head("GET", CACHE, TOKENS["ex1"]))
            time.sleep(0.5)  # the answers fill the sockets' buffers
            health = [request("GET", served.url + R.health.path()) for _ in range(5)]
            body = codec.dumps(ExecutorStatus("http://127.0.0.1:1", 1))
            put = request("PUT", served.url + R.put_executor.path(executor_id="ex1"), TOKENS["ex1"], body)
            assert all(status == 200 for status, _ in [*health, put]), (health, put)
            slowest = max(seconds for _, seconds in [*health, put])
            assert slowest < 1.0, slowest
            assert threading.active_count() - threads <= THREADS + 2  # the loop, the lease, the workers
            time.sleep(2.5)  # past the send timeout: cut
            received = [read_to_end(reader, within=5.0)[0] for reader in readers]
            assert all(0 < total < BIG for total in received), received
        finally:
            close_all(readers)
        print(
            f"\n8 readers of {BIG >> 20} MiB reading nothing: /healthz and PUT executor answered in "
            f"{slowest * 1000:.0f} ms at most; each cut after the send timeout (2 s) with "
            f"{min(received) >> 20}-{max(received) >> 20} MiB of it sent"
        )


# -- 4. idle and trickling connections ----------------------------------------------------


def test_idle_and_trickling_connections_keep_no_client_out(served: Served) -> None:
    attackers: list[socket.socket] = []
    try:
        for index in range(120):
            connection = connect(served.url)
            attackers.append(connection)
            if index % 2:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head, never ended
        started = time.monotonic()
        for _ in range(5):  # and trickling on
            for connection in attackers[1::2]:
                with contextlib.suppress(OSError):  # closed by now
                    connection.sendall(b"X-A: b\r\n")
            status, seconds = request("GET", served.url + R.health.path())
            assert status == 200 and seconds < 1.0, seconds
            time.sleep(0.1)
        closed = closed_within(attackers, within=5.0)
        assert closed < 4.0, closed  # keep_alive_timeout 1 s, however they trickle
        print(
            f"\n120 idle or trickling connections: a new client served at once; all closed "
            f"{time.monotonic() - started:.2f} s after they began (keep-alive timeout 1 s)"
        )
    finally:
        close_all(attackers)


# -- 5. followers: HEAD and clients that leave ---------------------------------------------


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Served, str]]:
    """A runservice whose followers are 4, with a run whose task waits (its log follows on for
    QUIET seconds); the path of that log."""
    monkeypatch.setattr(logs, "MAX_FOLLOWERS", 4)
    monkeypatch.setattr(logs, "POLL", 0.05)
    for served in serving(MemoryStorage(), send_timeout=2.0):
        config = RunConfig([TaskConfig("t", [Step(StepKind.RUN, command="true")])])
        run = served.service.runs.create(config, GROUP)
        yield served, R.run_log.path(run_id=run.id, task_name="t", step=0) + "?follow=true"


def follow(url: str, path: str) -> socket.socket:
    """A follow whose answer began (its status read)."""
    connection = connect(url)
    connection.sendall(head("GET", path, TOKENS["client"]))
    assert connection.recv(12) == b"HTTP/1.1 200"
    return connection


def test_head_and_clients_that_leave_take_no_follower_slot(queued: tuple[Served, str]) -> None:
    served, path = queued
    for _ in range(4):
        with urllib3.PoolManager(retries=False, timeout=5) as pool:
            answer = pool.request("HEAD", served.url + path, headers=headers(TOKENS["client"]))
        assert answer.status == 200
    for _ in range(3):  # all four slots, then the clients leave
        close_all([follow(served.url, path) for _ in range(4)])
    deadline = time.monotonic() + 5
    while True:
        try:
            followers = [follow(served.url, path) for _ in range(4)]  # all four free again
            break
        except AssertionError:
            assert time.monotonic() < deadline, "follower slots stayed taken"
            time.sleep(0.1)
    try:
        status, _ = request("GET", served.url + path, TOKENS["client"], timeout=5)
        assert status == 503  # a fifth: the bound holds
    finally:
        close_all(followers)


# -- 6. long polls ------------------------------------------------------------------------


def tasks_path(after: str = "", wait: str = "") -> str:
    query = "&".join(f"{name}={value}" for name, value in (("after", after), ("wait", wait)) if value)
    return R.executor_tasks.path(executor_id="ex1") + (f"?{query}" if query else "")


def version(served: Served) -> str:
    with urllib3.PoolManager(retries=False, timeout=5) as pool:
        answer = pool.request("GET", served.url + tasks_path(), headers=headers(TOKENS["ex1"]))
    assert answer.status == 200, answer.data
    return str(answer.json()["version"])


def test_long_polls_hold_no_thread_and_end_with_a_change(served: Served) -> None:
    threads = threading.active_count()
    seen = version(served)
    polls = [connect(served.url) for _ in range(50)]
    try:
        for poll in polls:
            poll.sendall(head("GET", tasks_path(seen, "25"), TOKENS["ex1"]))
        time.sleep(0.5)
        assert threading.active_count() - threads <= THREADS + 1
        for _ in range(5):
            for method, path, token in [
                ("GET", R.health.path(), None),
                ("GET", R.list_runs.path(), "client"),
            ]:
                status, seconds = request(method, served.url + path, TOKENS.get(token or ""))
                assert status == 200 and seconds < 1.0, (path, seconds)
        started = time.monotonic()
        served.service.executors.changes.bump("ex1")
        answers = [answer_of(poll) for poll in polls]
        seconds = time.monotonic() - started
        assert all(status == 200 for status, _ in answers)
        assert {json.loads(body)["version"] for _, body in answers} == {version(served)} != {seen}
        assert seconds < 2.0, seconds
        held = threading.active_count() - threads
        print(f"\n50 long polls: {held} more threads; answered {seconds * 1000:.0f} ms after a change")
    finally:
        close_all(polls)


@pytest.mark.parametrize("wait", ["31", "-1", "nan", "inf", "soon", ""])
def test_a_wait_out_of_bounds_is_a_400_naming_it(served: Served, wait: str) -> None:
    path = R.executor_tasks.path(executor_id="ex1") + f"?after=x.1&wait={wait}"
    with urllib3.PoolManager(retries=False, timeout=5) as pool:
        answer = pool.request("GET", served.url + path, headers=headers(TOKENS["ex1"]))
    assert answer.status == 400 and repr(wait) in answer.json()["message"], answer.data


def test_stop_ends_promptly_with_long_polls_and_followers_open(queued: tuple[Served, str]) -> None:
    served, path = queued
    threads = threading.active_count()
    seen = version(served)
    polls = [connect(served.url) for _ in range(20)]
    followers: list[socket.socket] = []
    try:
        for poll in polls:
            poll.sendall(head("GET", tasks_path(seen, "25"), TOKENS["ex1"]))
        followers = [follow(served.url, path) for _ in range(4)]
        time.sleep(0.3)
        started = time.monotonic()
        served.server.stop()
        seconds = time.monotonic() - started
        assert seconds < 3.0, seconds
        assert closed_within(polls + followers, within=2.0) < 2.0
        assert threading.active_count() < threads  # the server's loop and workers ended
        print(f"\nstop() with 20 long polls and 4 followers open: {seconds * 1000:.0f} ms")
    finally:
        close_all(polls + followers)


def test_a_client_that_leaves_a_long_poll_frees_it(served: Served) -> None:
    seen = version(served)
    with connect(served.url) as poll:
        poll.sendall(head("GET", tasks_path(seen, "25"), TOKENS["ex1"]))
        deadline = time.monotonic() + 5
        while not served.service.executors.changes.waiting("ex1"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    deadline = time.monotonic() + 5
    while served.service.executors.changes.waiting("ex1"):  # its coroutine ended with the connection
        assert time.monotonic() < deadline, "the poll still waits"
        time.sleep(0.02)


def test_an_answer_is_a_valid_http_response_whatever_the_path(served: Served) -> None:
    """Encoded "/" and ".." stay in their segment: a run id, never a path."""
    for run_id in ["..", "../..", "a/b", "%2e%2e"]:
        with connect(served.url) as connection:
            connection.sendall(head("GET", R.get_run.path(run_id=run_id), TOKENS["client"]))
            response = http.client.HTTPResponse(connection)
            response.begin()
            assert response.status == 400, (run_id, response.read())  # not a valid run id
    assert request("GET", served.url + "/api/v1/runs/a/b", TOKENS["client"])[0] == 404  # two segments
    assert request("PUT", served.url + R.health.path())[0] == 405
