"""A fault-injecting HTTP proxy for the S3 tests: it sits in front of an S3 server and breaks chosen requests.

The proxy listens on 127.0.0.1 (a free port), in threads of the test process. It keeps
client connections alive (HTTP/1.1) and forwards each request on a new upstream connection,
unchanged: the request line byte for byte, every header (Host included, so signatures made
for the proxy's address stay as they are), and the body. Two exceptions: a chunked request
body is decoded and sent with a ``Content-Length``, and ``Connection``/``Keep-Alive`` become
``Connection: close`` upstream. The upstream answer is read in full, then sent back, with a
fault if a rule of the current plan picks the request::

    with FaultProxy("127.0.0.1:9000") as proxy:
        proxy.plan(Rule(Fault.RESET_AFTER, method="PUT", times=1))
        ...  # a client of proxy.endpoint
        assert proxy.counts() == {"RESET_AFTER": 1}
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import attrs

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})
_MAX_LINE = 65536


class Fault(enum.Enum):
    """What the proxy does to a request that a rule picks."""

    STATUS_503 = "STATUS_503"
    """Answer 503 with an S3 error (``SlowDown``); the request is not forwarded."""

    RESET = "RESET"
    """Reset the client connection (the client sees ECONNRESET); the request is not forwarded."""

    RESET_AFTER = "RESET_AFTER"
    """Forward, then reset the client connection: the server applied the request, its answer is lost."""

    STATUS_500_AFTER = "STATUS_500_AFTER"
    """Forward, then answer 500 with an S3 error (``InternalError``) instead of the real answer."""

    CUT = "CUT"
    """Forward; send the real status and headers but only the first half of the body, then close."""

    CUT_CONSISTENT = "CUT_CONSISTENT"
    """Forward; send the first half of the body with a ``Content-Length`` to match (ETag unchanged)."""

    GARBLE = "GARBLE"
    """Forward; send the real status, headers and length with a corrupted body (malformed if XML)."""

    STALL = "STALL"
    """Forward; send status and headers, then the body one byte a ``trickle_interval`` until it is
    sent or ``stall_limit`` passes, then close."""

    STALL_HEADERS = "STALL_HEADERS"
    """Forward, then wait ``stall_limit`` seconds before answering (if the proxy stops first, close)."""


_UNFORWARDED = frozenset({Fault.RESET, Fault.STATUS_503})


@attrs.frozen
class Rule:
    """Which requests get ``fault``: all the given conditions hold (None means any).

    ``query`` is a query parameter that must be present (e.g. "uploadId"), ``has_header`` a
    request header that must be present (any case), ``body`` whether the request has a
    non-empty body. Of the matching requests the first ``skip`` pass, then each gets the
    fault with ``probability``, at most ``times`` times in all. ``then`` runs once the fault
    is chosen and, for a fault that forwards, the server has answered, before the client
    hears anything: where a test makes another writer act at that very moment.
    """

    fault: Fault
    method: str | None = None
    query: str | None = None
    has_header: str | None = None
    body: bool | None = None
    probability: float = 1.0
    times: int | None = None
    skip: int = 0
    then: Callable[[], object] | None = attrs.field(default=None, eq=False)

    def matches(self, request: Request) -> bool:
        """Whether the request meets the rule's conditions (not counting skip, times, probability)."""
        if self.method is not None and request.method.upper() != self.method.upper():
            return False
        if self.query and self.query not in request.query_names:
            return False
        if self.has_header and request.header(self.has_header) is None:
            return False
        return self.body is None or self.body == bool(request.body)


@attrs.frozen
class Injection:
    """One injected fault: the request's method, path and raw query string, and the fault."""

    method: str
    path: str
    query: str
    fault: Fault


@attrs.frozen
class Request:
    """A request as the proxy read it (the body decoded if it came chunked)."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in parse_qsl(self.query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@attrs.frozen
class Response:
    """An answer to send back: status, headers (no hop-by-hop ones) and the full body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def with_header(self, name: str, value: str) -> Response:
        """This response with header ``name`` set to ``value`` (replacing any of that name)."""
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        return attrs.evolve(self, headers=(*kept, (name, value)))


@attrs.define
class _RuleState:
    rule: Rule
    seen: int = 0
    fired: int = 0


class _Closed(Exception):
    """The client closed the connection, or sent something that is not HTTP."""


class InFlight:
    """A rule's hook that counts the requests in flight, each held (after the server applied
    it) until ``target`` are, or ``hold`` seconds pass, so that the maximum is exact, not a
    matter of timing. ``events`` gets "request" as each one ends; tests add their own."""

    def __init__(self, target: int, hold: float = 3.0) -> None:
        self.target = target
        self.hold = hold
        self.now = 0
        self.most = 0
        self.seen = 0
        self.events: list[str] = []
        self._changed = threading.Condition()

    def __call__(self) -> None:
        with self._changed:
            self.now += 1
            self.seen += 1
            self.most = max(self.most, self.now)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.most >= self.target, timeout=self.hold)
            self.now -= 1
            self.events.append("request")


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (``host:port``) that injects faults.

    ``stall_limit`` and ``trickle_interval`` (seconds) shape the stall faults and may be
    changed at any time; ``timeout`` bounds every socket wait. The log (``injected``,
    ``requests``, ``counts()``) covers the proxy's whole life, across plans.
    """

    def __init__(
        self,
        upstream: str,
        *,
        stall_limit: float = 10.0,
        trickle_interval: float = 1.5,
        timeout: float = 30.0,
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = upstream
        self._upstream_address = (host, int(port))
        self.stall_limit = stall_limit
        self.trickle_interval = trickle_interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._rules: list[_RuleState] = []
        self._random = random.Random(0)
        self._injected: list[Injection] = []
        self._requests = 0
        self._body_bytes = 0
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._port: int | None = None
        self._acceptor: threading.Thread | None = None
        self._handlers: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()

    # -- life ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on a free port of 127.0.0.1 and serve in background threads."""
        if self._listener is not None:
            raise RuntimeError("the proxy is already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: wake every stall, close every connection, join the threads (bounded)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._acceptor is not None:
            self._acceptor.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
            handlers = list(self._handlers)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port``, where clients connect."""
        return f"127.0.0.1:{self.port}"

    # -- plan and log -------------------------------------------------------------

    def plan(self, *rules: Rule, seed: int = 0) -> None:
        """Replace the rules (with fresh counts); ``seed`` seeds the draws of probabilities."""
        with self._lock:
            self._rules = [_RuleState(rule) for rule in rules]
            self._random = random.Random(seed)

    def clear(self) -> None:
        """No more faults."""
        self.plan()

    @property
    def injected(self) -> list[Injection]:
        """Every fault injected so far, in order."""
        with self._lock:
            return list(self._injected)

    @property
    def requests(self) -> int:
        """How many requests the proxy has read, faulted or not."""
        with self._lock:
            return self._requests

    @property
    def body_bytes(self) -> int:
        """How many bytes of answer bodies the proxy has sent, or begun to send, to clients (not
        counting stalled ones)."""
        with self._lock:
            return self._body_bytes

    def counts(self) -> dict[str, int]:
        """How many times each fault was injected, by fault name."""
        counts: dict[str, int] = {}
        for injection in self.injected:
            counts[injection.fault.name] = counts.get(injection.fault.name, 0) + 1
        return counts

    def _choose(self, request: Request) -> Rule | None:
        """The fault of the first rule that fires on ``request``, logged; a rule that matches
        but does not fire (skipping, spent, or unlucky) leaves the request to the next ones."""
        with self._lock:
            self._requests += 1
            for state in self._rules:
                rule = state.rule
                if not rule.matches(request):
                    continue
                state.seen += 1
                if state.seen <= rule.skip or (rule.times is not None and state.fired >= rule.times):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                state.fired += 1
                self._injected.append(Injection(request.method, request.path, request.query, rule.fault))
                return rule
        return None

    # -- serving ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(self.timeout)
            thread = threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True)
            with self._lock:
                self._handlers = {t for t in self._handlers if t.is_alive()}
                self._handlers.add(thread)
                self._sockets.add(conn)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        """Answer the requests of one client connection until it closes or a fault ends it."""
        rfile: BinaryIO = conn.makefile("rb")
        reset = False
        try:
            while not self._stopping.is_set():
                request = _read_request(rfile, conn)
                rule = self._choose(request)
                fault = rule.fault if rule is not None else None
                if rule is not None and rule.then is not None and fault in _UNFORWARDED:
                    rule.then()
                if fault is Fault.RESET:
                    reset = True
                    return
                if fault is Fault.STATUS_503:
                    response = _error_response(503, "Service Unavailable", "SlowDown", request)
                    self._send(conn, request, response)
                    if not request.keep_alive:
                        return
                    continue
                response = self._forward(request)
                if rule is not None and rule.then is not None:
                    rule.then()
                if fault is None:
                    self._send(conn, request, response)
                    if not request.keep_alive:
                        return
                    continue
                if fault is Fault.RESET_AFTER:
                    reset = True
                    return
                if fault is Fault.STALL:
                    self._stall(conn, request, response)
                    return
                if fault is Fault.CUT:
                    self._send(conn, request, response, body=response.body[: len(response.body) // 2])
                    return
                if fault is Fault.STALL_HEADERS:
                    if self._stopping.wait(self.stall_limit):
                        return
                elif fault is Fault.STATUS_500_AFTER:
                    response = _error_response(500, "Internal Server Error", "InternalError", request)
                elif fault is Fault.CUT_CONSISTENT and request.method != "HEAD":  # a HEAD has no body
                    body = response.body[: len(response.body) // 2]
                    response = attrs.evolve(response, body=body).with_header("Content-Length", str(len(body)))
                elif fault is Fault.GARBLE:
                    response = attrs.evolve(
                        response, body=_garble(response.body, response.header("content-type"))
                    )
                self._send(conn, request, response)
                if not request.keep_alive:
                    return
        except (_Closed, OSError, ValueError):  # gone, broken off, or not HTTP
            pass
        finally:
            rfile.close()
            if reset:
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            with self._lock:
                self._sockets.discard(conn)

    def _forward(self, request: Request) -> Response:
        """Send ``request`` upstream on a new connection; its full answer (502 if there is none)."""
        head = [f"{request.method} {request.target} {request.version}\r\n".encode("latin-1")]
        for name, value in request.headers:
            if name.lower() not in _HOP_BY_HOP:
                head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if request.chunked:
            head.append(f"Content-Length: {len(request.body)}\r\n".encode("latin-1"))
        head.append(b"Connection: close\r\n\r\n")
        try:
            upstream = socket.create_connection(self._upstream_address, timeout=self.timeout)
        except OSError as exc:
            return _error_response(502, "Bad Gateway", "BadGateway", request, str(exc))
        with self._lock:
            self._sockets.add(upstream)
        try:
            if self._stopping.is_set():
                raise OSError("the proxy is stopping")
            upstream.sendall(b"".join(head) + request.body)
            answer = http.client.HTTPResponse(upstream, method=request.method)
            try:
                answer.begin()
                body = answer.read()
            finally:
                answer.close()
        except (OSError, http.client.HTTPException) as exc:
            return _error_response(502, "Bad Gateway", "BadGateway", request, str(exc))
        finally:
            with self._lock:
                self._sockets.discard(upstream)
            upstream.close()
        headers = tuple((k, v) for k, v in answer.msg.items() if k.lower() not in _HOP_BY_HOP)
        response = Response(answer.status, answer.reason, headers, body)
        if (
            request.method != "HEAD"
            and answer.status not in (204, 304)
            and (answer.chunked or response.header("content-length") is None)
        ):
            response = response.with_header("Content-Length", str(len(body)))
        return response

    def _send(
        self, conn: socket.socket, request: Request, response: Response, body: bytes | None = None
    ) -> None:
        """Send the status, the headers and ``body`` (by default the response's; none to a HEAD)."""
        if body is None:
            body = response.body
        if request.method == "HEAD":
            body = b""
        with self._lock:  # counted first: a client that has the bytes finds them counted
            self._body_bytes += len(body)
        conn.sendall(_head(request, response) + body)

    def _stall(self, conn: socket.socket, request: Request, response: Response) -> None:
        """Send the head at once, then the body a byte at a time until done or ``stall_limit`` passes."""
        conn.sendall(_head(request, response))
        body = b"" if request.method == "HEAD" else response.body
        deadline = time.monotonic() + self.stall_limit
        for index in range(len(body)):
            conn.sendall(body[index : index + 1])
            if index == len(body) - 1:
                return
            wait = min(self.trickle_interval, deadline - time.monotonic())
            if wait <= 0 or self._stopping.wait(wait) or time.monotonic() >= deadline:
                return


# -- HTTP bits ----------------------------------------------------------------------


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    """The first header called ``name`` (in any case), or None."""
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


def _read_line(rfile: BinaryIO) -> bytes:
    line = rfile.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise _Closed("line too long")
    return line


def _read_request(rfile: BinaryIO, conn: socket.socket) -> Request:
    """Read one request (head and body) from a client connection."""
    line = _read_line(rfile)
    while line in (b"\r\n", b"\n"):  # stray blank lines between requests are allowed
        line = _read_line(rfile)
    if not line:
        raise _Closed("the client closed the connection")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _Closed(f"not an HTTP request line: {line!r}")
    method, target, version = parts
    headers: list[tuple[str, str]] = []
    while True:
        header = _read_line(rfile)
        if header in (b"\r\n", b"\n", b""):
            break
        name, sep, value = header.decode("latin-1").partition(":")
        if not sep:
            raise _Closed(f"not an HTTP header: {header!r}")
        headers.append((name.strip(), value.strip()))
    request = Request(method, target, version, tuple(headers), b"")
    if (request.header("expect") or "").lower() == "100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if request.chunked:
        body = _read_chunked(rfile)
    else:
        length = int(request.header("content-length") or 0)
        body = rfile.read(length) if length else b""
        if len(body) < length:
            raise _Closed("the client closed the connection in a body")
    return attrs.evolve(request, body=body)


def _read_chunked(rfile: BinaryIO) -> bytes:
    """A chunked body, decoded (trailers are dropped)."""
    chunks: list[bytes] = []
    while True:
        size_line = _read_line(rfile)
        if not size_line:
            raise _Closed("the client closed the connection in a chunked body")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise _Closed("the client closed the connection in a chunk")
        chunks.append(chunk)
        _read_line(rfile)  # the CRLF after the chunk
    while _read_line(rfile) not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(chunks)


def _head(request: Request, response: Response) -> bytes:
    """The status line and headers of ``response``, with this proxy's ``Connection`` header."""
    lines = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in response.headers)
    lines.append("Connection: keep-alive\r\n\r\n" if request.keep_alive else "Connection: close\r\n\r\n")
    return "".join(lines).encode("latin-1")


def _error_response(status: int, reason: str, code: str, request: Request, message: str = "") -> Response:
    """An S3 error answer to ``request``."""
    messages = {
        "SlowDown": "Please reduce your request rate.",
        "InternalError": "We encountered an internal error. Please try again.",
    }
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message or messages.get(code, reason))}</Message>"
        f"<Resource>{escape(request.path)}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()
    headers = (
        ("Content-Type", "application/xml"),
        ("Content-Length", str(len(body))),
        ("x-amz-request-id", "faultproxy"),
    )
    return Response(status, reason, headers, body)


def _garble(body: bytes, content_type: str | None) -> bytes:
    """``body`` corrupted in the middle: malformed if it is XML, else with a few bits flipped."""
    if not body:
        return body
    garbled = bytearray(body)
    if body.lstrip()[:1] == b"<" or "xml" in (content_type or "").lower():
        junk = b"\x00<&"[: len(body)]
        start = (len(body) - len(junk)) // 2
        garbled[start : start + len(junk)] = junk
    else:
        start = max(0, len(body) // 2 - 2)
        for index in range(start, min(len(body), start + 4)):
            garbled[index] ^= 0xFF
    return bytes(garbled)
