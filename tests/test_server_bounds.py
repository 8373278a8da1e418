"""Bounded waits (docs/runservice.md, "Bounded waits"), with real sockets on 127.0.0.1.

The servers: clients that stall in the middle of an upload hold no thread, are closed after
the channel timeout, and past the connection limit are not even accepted, while others are
served; a client that reads nothing of its answer is closed too, freeing its thread; a body
over the limit is spooled, not held in memory; files are streamed by the worker threads.
The client: a download that trickles breaks off at its deadline, a fast one arrives whole.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from runstore.contract.clients import ExecutorClient
from runstore.contract.http.client import MIN_RATE, ServiceClient, UnreachableError
from runstore.contract.http.server import JsonApp, ServerThread, json_response, read_body
from runstore.contract.routes import ExecutorRoutes, Route
from runstore.executor.app import ExecutorApp

TIMEOUT = 2  # the channel timeout of the servers here, seconds
STALLED = 300
DECLARED = 1_000_000  # the Content-Length each stalled upload claims
SENT = 1000  # the bytes of it each one sends


class Routes:
    upload = Route("PUT", "/upload", None)
    hello = Route("GET", "/hello", None)


UPLOAD = Routes.upload.path()


class App(JsonApp):
    """Counts an upload of at most ``limit`` bytes; says hello."""

    table = Routes

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit

    def upload(self, request: Request) -> Response:
        return json_response({"received": len(read_body(request, self.limit, "an upload").read())})

    def hello(self, request: Request) -> Response:
        return json_response({"hello": "world"})


def fds() -> int:
    """The open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def stall(url: str, count: int) -> list[socket.socket]:
    """``count`` connections, each sending the headers of an upload of DECLARED bytes and SENT of them."""
    head = f"PUT {UPLOAD} HTTP/1.1\r\nHost: x\r\nContent-Length: {DECLARED}\r\n\r\n".encode()
    sockets = []
    try:
        for _ in range(count):
            connection = socket.create_connection(address(url), timeout=5)
            sockets.append(connection)
            connection.sendall(head + b"x" * SENT)
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def close_all(sockets: Iterable[socket.socket]) -> None:
    for connection in sockets:
        connection.close()


def hello(url: str, timeout: float = 5.0) -> tuple[int, float]:
    """A normal request on a new connection: its status and seconds."""
    started = time.monotonic()
    with urllib3.PoolManager(retries=False, timeout=timeout) as pool:  # closes the connection
        response = pool.request("GET", url + Routes.hello.path())
    assert json.loads(response.data) == {"hello": "world"}
    return response.status, time.monotonic() - started


def answer_of(connection: socket.socket) -> tuple[int, bytes]:
    """The status and body of the answer that comes on ``connection``."""
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, response.read()


def closed_after(sockets: list[socket.socket], since: float, within: float) -> list[float]:
    """Seconds from ``since`` until each socket read its end (EOF or reset), waiting ``within`` at most."""
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        for connection in sockets:
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
        while len(closed) < len(sockets) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket), ready
                try:
                    data = ready.recv(1 << 16)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"the server answered a stalled upload: {data[:100]!r}"
                closed[ready] = time.monotonic() - since
                selector.unregister(ready)
    assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} stalled connection(s) still open"
    return sorted(closed.values())


def test_stalled_uploads_hold_no_thread_and_are_closed_after_the_channel_timeout() -> None:
    threads, descriptors = threading.active_count(), fds()
    server = ServerThread(App(), connection_limit=STALLED + 50, channel_timeout=TIMEOUT)
    server.start()
    stalled: list[socket.socket] = []
    try:
        server_threads = threading.active_count() - threads
        assert server_threads <= 8 + 1  # the worker threads and the loop
        stalled = stall(server.url, STALLED)
        since = time.monotonic()
        status, seconds = hello(server.url)
        assert status == 200 and seconds < 2.0, seconds
        time.sleep(0.5)  # the server has read them all by now
        assert threading.active_count() - threads == server_threads  # no thread per connection
        held = fds() - descriptors - STALLED  # the server's own, beside the clients' sockets
        assert held <= STALLED + 10, held  # a socket per connection, no more (nothing spooled)
        times = closed_after(stalled, since, within=TIMEOUT + 5.0)
        assert times[0] >= TIMEOUT - 0.1 and times[-1] <= TIMEOUT + 3.0, (times[0], times[-1])
        print(
            f"\n{STALLED} stalled uploads: {threading.active_count()} threads in all "
            f"({server_threads} the server's), {held} descriptors the server's; closed "
            f"{times[0]:.2f}-{times[-1]:.2f} s after they stalled (channel timeout {TIMEOUT} s); "
            f"a request answered in {seconds * 1000:.0f} ms"
        )
        close_all(stalled)
        assert fds() - descriptors <= 10  # all closed, both ends
        assert hello(server.url)[0] == 200
    finally:
        close_all(stalled)
        server.stop()
    assert threading.active_count() == threads  # stop() joined the server's threads
    assert fds() == descriptors  # and closed its sockets


def test_connections_past_the_limit_wait_unaccepted_and_the_server_serves_once_they_go() -> None:
    limit, count = 20, 60
    threads = threading.active_count()
    server = ServerThread(App(), connection_limit=limit, channel_timeout=TIMEOUT).start()
    stalled: list[socket.socket] = []
    answered: list[tuple[int, float]] = []
    try:
        server_threads, descriptors = threading.active_count() - threads, fds()
        stalled = stall(server.url, count)
        time.sleep(0.5)
        held = fds() - descriptors - count
        assert held == limit  # a socket per connection accepted, the rest wait in the backlog
        waiting = threading.Thread(target=lambda: answered.append(hello(server.url, timeout=10.0)))
        waiting.start()
        waiting.join(0.5)
        assert answered == []  # in the backlog too, behind the stalled ones
        gone = time.monotonic()
        close_all(stalled)
        waiting.join(5.0)
        assert answered and answered[0][0] == 200
        seconds = time.monotonic() - gone
        assert seconds < 2.0, seconds
        assert threading.active_count() - threads == server_threads
        print(
            f"\n{count} stalled at a limit of {limit}: {held} accepted, "
            f"{server_threads} threads; answered {seconds * 1000:.0f} ms after they went"
        )
    finally:
        close_all(stalled)
        server.stop()
    assert threading.active_count() == threads


def test_a_client_that_reads_nothing_of_its_answer_is_closed_and_frees_its_thread() -> None:
    """Waitress would wait for it forever once 16 MiB of the answer are buffered."""
    chunk = bytes(1 << 20)

    def big(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == Routes.hello.path():
            return App()(environ, start_response)
        start_response("200 OK", [("Content-Length", str(64 * len(chunk)))])
        return (chunk for _ in range(64))

    threads, descriptors = threading.active_count(), fds()
    server = ServerThread(big, threads=1, channel_timeout=TIMEOUT).start()
    try:
        with socket.create_connection(address(server.url), timeout=10) as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and reads nothing
            time.sleep(0.5)
            status, seconds = hello(server.url, timeout=10.0)  # the one worker is the reader's till then
            assert status == 200
            assert seconds < TIMEOUT + 3.0, seconds
        print(f"\na client reading nothing of 64 MiB: closed, the next request answered in {seconds:.2f} s")
    finally:
        server.stop()
    assert (threading.active_count(), fds()) == (threads, descriptors)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_spooled_not_held_in_memory(chunked: bool) -> None:
    limit, size, piece = 1 << 20, 16 << 20, 64 << 10
    server = ServerThread(App(limit)).start()
    data = memoryview(bytes(piece))
    try:
        with socket.create_connection(address(server.url), timeout=10) as connection:
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
            tracemalloc.start()
            try:
                connection.sendall(f"PUT {UPLOAD} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
                for _ in range(size // piece):
                    if chunked:
                        connection.sendall(b"%x\r\n" % piece)
                    connection.sendall(data)
                    if chunked:
                        connection.sendall(b"\r\n")
                if chunked:
                    connection.sendall(b"0\r\n\r\n")
                status, answer = answer_of(connection)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert status == 413, answer[:200]
        assert json.loads(answer) == {
            "kind": "too_large",
            "message": f"an upload of {size} bytes is over the limit of {limit} bytes",
        }
        assert peak < 4 << 20, peak  # of 16 MiB received
        print(f"\n{size >> 20} MiB over a limit of {limit >> 20} MiB: peak traced memory {peak >> 10} KiB")
    finally:
        server.stop()


def test_a_body_over_the_servers_limit_is_refused_before_it_is_sent() -> None:
    server = ServerThread(App(), max_request_body_size=4 << 20).start()
    try:
        with socket.create_connection(address(server.url), timeout=10) as connection:
            connection.sendall(
                f"PUT {UPLOAD} HTTP/1.1\r\nHost: x\r\nContent-Length: {8 << 20}\r\n\r\n".encode()
            )
            status, answer = answer_of(connection)  # no byte of the body sent
        assert status == 413, answer[:200]
        assert hello(server.url)[0] == 200
    finally:
        server.stop()


def test_stop_closes_a_server_never_started() -> None:
    threads, descriptors = threading.active_count(), fds()
    server = ServerThread(App())
    server.stop()
    server.stop()
    assert (threading.active_count(), fds()) == (threads, descriptors)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address(server.url), timeout=5).close()


# -- streamed answers ---------------------------------------------------------------------


def test_a_log_is_served_as_far_as_written(tmp_path: Path) -> None:
    logs = tmp_path / "t1" / "logs" / "steps"
    logs.mkdir(parents=True)
    log = logs / "0.log"
    log.write_bytes(b"a" * 1000)
    server = ServerThread(ExecutorApp(tmp_path)).start()
    client = ExecutorClient(server.url)
    try:
        with client.log("t1", 0) as download:
            assert download.read() == b"a" * 1000
        with log.open("ab") as file:
            file.write(b"b" * (2 << 20))
        with client.log("t1", 0) as download:
            first = download.read(10)
            with log.open("ab") as file:
                file.write(b"c" * 1000)  # written while it is served: not in this answer
            rest = download.read()
        assert first + rest == b"a" * 1000 + b"b" * (2 << 20)
        with client.log("t1", 0) as download:
            assert len(download.read()) == 1000 + (2 << 20) + 1000
    finally:
        client.close()
        server.stop()


class Recording(io.BytesIO):
    """A seekable stream that records which threads read it and whether anyone seeks it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.readers: set[str] = set()
        self.seeks = 0

    def read(self, size: int | None = -1) -> bytes:
        self.readers.add(threading.current_thread().name)
        return super().read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.seeks += 1
        return super().seek(offset, whence)


def test_a_wrapped_file_is_read_by_a_worker_thread_without_seeking() -> None:
    """werkzeug's ``wrap_file`` is iterated by the worker, not sent by waitress's I/O thread."""
    stream = Recording(b"z" * (1 << 20))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = Response(wrap_file(environ, stream), direct_passthrough=True)
        return response(environ, start_response)

    server = ServerThread(app).start()
    try:
        response = urllib3.request("GET", server.url + "/", retries=False, timeout=10)
        assert response.status == 200 and response.data == b"z" * (1 << 20)
    finally:
        server.stop()
    assert stream.readers and all(name.startswith("waitress-") for name in stream.readers), stream.readers
    assert stream.seeks == 0


# -- the client's deadline ----------------------------------------------------------------


class Trickle:
    """A loopback server that answers one request with a body of ``size`` bytes, one every ``pause`` s."""

    def __init__(self, size: int, *, content_length: bool, pause: float = 0.2) -> None:
        self._size = size
        self._pause = pause
        self._head = b"HTTP/1.1 200 OK\r\n" + (
            b"Content-Length: %d\r\n\r\n" % size if content_length else b"Connection: close\r\n\r\n"
        )
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(10)
        self._stop = threading.Event()
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._socket.accept()
        except OSError:
            return
        with connection:
            connection.recv(1 << 16)
            try:
                connection.sendall(self._head)
                for _ in range(self._size):
                    if self._stop.wait(self._pause):
                        return
                    connection.sendall(b"x")
            except OSError:
                return  # the client gave up

    def close(self) -> None:
        self._stop.set()
        self._socket.close()
        self._thread.join(5)


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "until-close"])
def test_a_trickling_download_breaks_off_at_its_deadline(content_length: bool) -> None:
    server = Trickle(100, content_length=content_length)  # 20 s at a byte every 0.2 s
    client = ServiceClient(server.url, timeout=1.0, min_rate=1e9)  # the deadline: 1 s and a little
    started = time.monotonic()
    try:
        with client.open(ExecutorRoutes.log, {"task_id": "t1", "step": 0}) as download:
            with pytest.raises(UnreachableError, match=r"broke off after \d+ bytes: too slow") as raised:
                download.read()
            seconds = time.monotonic() - started
            with pytest.raises(UnreachableError, match="too slow"):
                download.read()  # and again: never the rest of the body, as if it were whole
        assert raised.value.retryable
        assert 1.0 <= seconds < 2.5, seconds
        assert 1 <= download.received <= 10, download.received
        print(
            f"\ntrickle ({'content-length' if content_length else 'until close'}): broke off after "
            f"{seconds:.2f} s, {download.received} bytes: {raised.value.message}"
        )
    finally:
        client.close()
        server.close()


def test_a_fast_download_arrives_whole_within_its_deadline(tmp_path: Path) -> None:
    size = 4 << 20
    logs = tmp_path / "t1" / "logs" / "steps"
    logs.mkdir(parents=True)
    data = os.urandom(size)
    (logs / "0.log").write_bytes(data)
    server = ServerThread(ExecutorApp(tmp_path)).start()
    client = ServiceClient(server.url, timeout=1.0)
    try:
        started = time.monotonic()
        with client.open(ExecutorRoutes.log, {"task_id": "t1", "step": 0}) as download:
            assert download.deadline() == pytest.approx(1.0 + size / MIN_RATE)
            assert download.read() == data and download.received == size
        print(
            f"\n{size >> 20} MiB in {time.monotonic() - started:.2f} s (deadline {download.deadline():.0f} s)"
        )
    finally:
        client.close()
        server.stop()


def test_a_read_returns_what_arrived_without_waiting_for_the_rest() -> None:
    """A read returns what one socket read brings (a followed log is read as it comes), and the
    whole body arrives by reading on."""
    server = Trickle(5, content_length=True, pause=0.2)
    client = ServiceClient(server.url, timeout=5.0)
    try:
        with client.open(ExecutorRoutes.log, {"task_id": "t1", "step": 0}) as download:
            started = time.monotonic()
            assert download.read(4) == b"x"  # the first byte, not four bytes 0.6 s later
            assert time.monotonic() - started < 0.5
            assert download.read() == b"xxxx"
            assert download.read(4) == b""
    finally:
        client.close()
        server.close()
