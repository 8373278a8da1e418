"""Bounded waits (docs/runservice.md, "Bounded waits"), with real sockets on 127.0.0.1.

The servers: clients that stall in the middle of an upload hold no thread and are cut after
the read timeout, while others are served; a client that reads nothing of its answer holds
no thread and is cut after the send timeout; a body over the limit is refused as it
arrives, not held in memory; files are read by the worker threads. The client: a download
that trickles breaks off at its deadline, a fast one arrives whole. tests/test_server_attacks.py
has the attacks.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import io
import json
import os
import selectors
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
import urllib3

from runstore.contract.clients import ExecutorClient
from runstore.contract.http.client import MIN_RATE, ServiceClient, UnreachableError
from runstore.contract.http.server import (
    THREADS,
    JsonApp,
    Request,
    Response,
    ServerThread,
    StreamingResponse,
    file_response,
    json_response,
    read_body,
)
from runstore.contract.routes import ExecutorRoutes, Route
from runstore.executor.app import ExecutorApp

TIMEOUT = 2  # the read and send timeouts of the servers here, seconds
STALLED = 300
DECLARED = 1_000_000  # the Content-Length each stalled upload claims
SENT = 1000  # the bytes of it each one sends
BIG = 64 << 20


class Routes:
    upload = Route("PUT", "/upload", None)
    hello = Route("GET", "/hello", None)
    big = Route("GET", "/big", None)


UPLOAD = Routes.upload.path()


class App(JsonApp):
    """Counts an upload of at most ``limit`` bytes; says hello; answers 64 MiB."""

    table = Routes

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit

    async def upload(self, request: Request) -> Response:
        return json_response({"received": len(await read_body(request, self.limit, "an upload").read())})

    def hello(self, request: Request) -> Response:
        return json_response({"hello": "world"})

    def big(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(BIG >> 20):
                yield bytes(1 << 20)

        return StreamingResponse(chunks(), headers={"Content-Length": str(BIG)})


def fds() -> int:
    """The open file descriptors of this process, once what earlier tests left unreferenced
    (a client socket in a reference cycle, say) is collected."""
    gc.collect()
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
    """Seconds from ``since`` until each socket read its end (EOF or reset), waiting ``within``
    at most; what the server said before is at most a 400 saying the body came too slowly."""
    closed: dict[socket.socket, float] = {}
    said: dict[socket.socket, bytes] = {}
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
                if data:
                    said[ready] = said.get(ready, b"") + data
                    continue
                closed[ready] = time.monotonic() - since
                selector.unregister(ready)
    assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} stalled connection(s) still open"
    for answer in said.values():
        assert answer.startswith(b"HTTP/1.1 400") and b"came too slowly" in answer, answer[:300]
    return sorted(closed.values())


def test_stalled_uploads_hold_no_thread_and_are_cut_after_the_read_timeout() -> None:
    threads, descriptors = threading.active_count(), fds()
    server = ServerThread(App(), read_timeout=TIMEOUT)
    server.start()
    stalled: list[socket.socket] = []
    try:
        hello(server.url)
        server_threads = threading.active_count() - threads
        since = time.monotonic()
        stalled = stall(server.url, STALLED)
        status, seconds = hello(server.url)
        assert status == 200 and seconds < 1.0, seconds
        time.sleep(0.5)  # the server has read them all by now
        assert threading.active_count() - threads <= THREADS + 1  # no thread per connection
        held = fds() - descriptors - STALLED  # the server's own, beside the clients' sockets
        assert held <= STALLED + 10, held  # a socket per connection, no more (nothing spooled)
        times = closed_after(stalled, since, within=TIMEOUT + 5.0)
        assert times[0] >= TIMEOUT - 0.1 and times[-1] <= TIMEOUT + 3.0, (times[0], times[-1])
        print(
            f"\n{STALLED} stalled uploads: {threading.active_count()} threads in all "
            f"({server_threads} the server's), {held} descriptors the server's; cut "
            f"{times[0]:.2f}-{times[-1]:.2f} s after they stalled (read timeout {TIMEOUT} s); "
            f"a request answered in {seconds * 1000:.0f} ms"
        )
        close_all(stalled)
        time.sleep(0.2)
        assert fds() - descriptors <= 10  # all closed, both ends
        assert hello(server.url)[0] == 200
    finally:
        close_all(stalled)
        server.stop()
    assert threading.active_count() == threads  # stop() joined the server's threads
    assert fds() == descriptors  # and closed its sockets


def test_a_client_that_reads_nothing_of_its_answer_holds_no_thread_and_is_cut() -> None:
    threads, descriptors = threading.active_count(), fds()
    server = ServerThread(App(), threads=1, send_timeout=TIMEOUT).start()
    try:
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
        with reader:
            reader.connect(address(server.url))
            reader.sendall(f"GET {Routes.big.path()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())  # reads nothing
            time.sleep(0.5)
            status, seconds = hello(server.url)  # the one worker thread is free
            assert status == 200 and seconds < 1.0, seconds
            time.sleep(TIMEOUT + 0.5)
            reader.settimeout(5)
            received = 0
            while data := reader.recv(1 << 20):  # what was sent before the cut, then the end
                received += len(data)
            assert 0 < received < BIG, received
        print(
            f"\na client reading nothing of {BIG >> 20} MiB: a request answered meanwhile in "
            f"{seconds * 1000:.0f} ms; cut after the send timeout with {received >> 20} MiB sent"
        )
    finally:
        server.stop()
    assert (threading.active_count(), fds()) == (threads, descriptors)


class Upload(threading.Thread):
    """Sends the body of an upload of ``size`` bytes, chunked or not, until the connection breaks."""

    def __init__(self, connection: socket.socket, size: int, *, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.connection = connection
        self.size = size
        self.chunked = chunked

    def run(self) -> None:
        piece = bytes(64 << 10)
        frame = b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
        with contextlib.suppress(OSError):  # the server answered and closed
            for _ in range(self.size // len(piece)):
                self.connection.sendall(frame)
            if self.chunked:
                self.connection.sendall(b"0\r\n\r\n")


@pytest.mark.parametrize("chunked", [False, True], ids=["false-content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_as_it_arrives_not_held_in_memory(chunked: bool) -> None:
    limit, size = 1 << 20, 16 << 20
    server = ServerThread(App(limit)).start()
    try:
        with socket.create_connection(address(server.url), timeout=10) as connection:
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {limit}"
            tracemalloc.start()
            try:
                connection.sendall(f"PUT {UPLOAD} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
                upload = Upload(connection, size, chunked=chunked)
                upload.start()
                status, answer = answer_of(connection)
                peak = tracemalloc.get_traced_memory()[1]
                upload.join(10)
            finally:
                tracemalloc.stop()
        if chunked:
            assert status == 413, answer[:200]
            assert json.loads(answer) == {
                "kind": "too_large",
                "message": f"an upload is over the limit of {limit} bytes",
            }
        else:  # the Content-Length (the limit) is read, the rest is not a body but garbage
            assert status == 200 and json.loads(answer) == {"received": limit}, answer[:200]
        assert peak < 4 << 20, peak  # of 16 MiB sent
        print(f"\n{size >> 20} MiB over a limit of {limit >> 20} MiB: peak traced memory {peak >> 10} KiB")
        assert hello(server.url)[0] == 200
    finally:
        server.stop()


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent() -> None:
    server = ServerThread(App(4 << 20)).start()
    try:
        with socket.create_connection(address(server.url), timeout=10) as connection:
            connection.sendall(
                f"PUT {UPLOAD} HTTP/1.1\r\nHost: x\r\nContent-Length: {8 << 20}\r\n\r\n".encode()
            )
            status, answer = answer_of(connection)  # no byte of the body sent
        assert status == 413, answer[:200]
        assert (
            json.loads(answer)["message"]
            == f"an upload of {8 << 20} bytes is over the limit of {4 << 20} bytes"
        )
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


def test_answers_are_sent_without_waiting_for_the_clients_acks() -> None:
    """Nagle's algorithm is off on the server's side of each connection, or an answer's second
    write would wait for the client's delayed ACK (40 ms a request)."""
    server = ServerThread(App()).start()
    try:
        with socket.create_connection(address(server.url), timeout=5) as client:
            client.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1 << 16).startswith(b"HTTP/1.1 200")
            (connection,) = server._listener.connections.values()
            assert connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        server.stop()


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


class FileApp(JsonApp):
    table = Routes

    def __init__(self, stream: Recording) -> None:
        self.stream = stream

    def big(self, request: Request) -> Response:
        return file_response(self.stream, "application/octet-stream")

    upload = hello = big


def test_a_file_is_read_by_worker_threads_without_seeking_and_closed() -> None:
    """Not by the loop's thread: a read of a store's stream may block."""
    stream = Recording(b"z" * (1 << 20))
    server = ServerThread(FileApp(stream)).start()
    try:
        response = urllib3.request("GET", server.url + Routes.big.path(), retries=False, timeout=10)
        assert response.status == 200 and response.data == b"z" * (1 << 20)
    finally:
        server.stop()
    assert stream.readers and all(" worker" in name for name in stream.readers), stream.readers
    assert stream.seeks == 0 and stream.closed


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


def test_an_empty_file_is_an_empty_answer(caplog: pytest.LogCaptureFixture) -> None:
    stream = Recording(b"")
    server = ServerThread(FileApp(stream)).start()
    try:
        response = urllib3.request("GET", server.url + Routes.big.path(), retries=False, timeout=10)
        assert (response.status, response.data) == (200, b"")
    finally:
        server.stop()
    assert stream.closed and "internal error" not in caplog.text
