"""The servers of the runservice and the executor: ASGI apps on hypercorn, on an asyncio loop.

Handlers raise :class:`ServiceError` subclasses; :class:`JsonApp` turns them into a status
code and a JSON body, a failure of a dependency (its ``unavailable_errors``: the
runservice's are objstore's ``RemoteError``) into 503 ``unavailable``, and any other
exception into a plain "internal error" so no internals leak. An app takes its paths from
a table of :mod:`runstore.contract.routes`; a handler is a coroutine (run on the loop) or a
plain function (run in a worker thread: it does blocking I/O). :class:`ServerThread` serves
an app so that a waiting request costs a coroutine, not a thread, and times out idle,
trickling and stalled clients (docs/runservice.md, "Bounded waits").

Hypercorn rather than uvicorn: hypercorn closes a connection that is idle or still
trickling its request head after ``keep_alive_timeout``, where uvicorn has no timeout
before a connection's first request is complete.
"""

from __future__ import annotations

from runstore.extras import require

require("runservice", "runstore.contract.http.server", "hypercorn", "starlette")

# ruff: noqa: E402 - the extra is checked first, so a missing one is named

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, BinaryIO, ClassVar, TypeVar, cast
from urllib.parse import unquote_to_bytes

import attrs
from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runstore.contract import codec
from runstore.contract.auth import BEARER, Identity, Tokens, book_of
from runstore.contract.errors import (
    BadRequestError,
    ErrorKind,
    ForbiddenError,
    NotExistError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
)
from runstore.contract.http.client import MIN_RATE
from runstore.contract.routes import Route, routes_of

T = TypeVar("T")
Message = MutableMapping[str, Any]
log = logging.getLogger(__name__)

__all__ = [
    "JsonApp",
    "LimitedBody",
    "Request",
    "Response",
    "ServerThread",
    "StreamingResponse",
    "add_listen_argument",
    "error_response",
    "file_response",
    "identity",
    "json_response",
    "listen_address",
    "read_body",
    "read_json",
]


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as a server's listen address (port 0: a free one)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def add_listen_argument(parser: argparse.ArgumentParser, port: int) -> None:
    """A command line's ``--listen HOST:PORT`` (default ``127.0.0.1:<port>``), as ``args.listen``."""
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", port),
        metavar="HOST:PORT",
        help=f"where to listen (127.0.0.1:{port}; port 0: a free one)",
    )


MAX_JSON_BODY = 1 << 20
"""The most bytes a JSON request body may have, however it is sent."""
SPOOL_MEMORY = 1 << 20
"""Bytes of a spooled request body held in memory; past them it goes to a temporary file."""
CHUNK = 1 << 16
"""Bytes of a streamed answer read at once."""

IDENTITY = "runstore.identity"
"""The ASGI scope's key of the caller's :class:`Identity` (None where the app takes no tokens)."""


def identity(request: Request) -> Identity | None:
    """Who made ``request``, as its token proved; None if the app takes no tokens."""
    found: Identity | None = request.scope.get(IDENTITY)
    return found


# -- answers ------------------------------------------------------------------------------


def error_response(kind: ErrorKind, message: str, status: int | None = None) -> Response:
    """The JSON answer ``{"kind", "message"}`` of an error, with the kind's status (or ``status``)."""
    body = json.dumps({"kind": kind.value, "message": message})
    return Response(body, status_code=status or kind.status, media_type="application/json")


def unavailable_message(exc: Exception) -> str:
    """What an ``unavailable`` answer says of a dependency's failure: its class and, if it has
    them, its ``status`` and ``code`` (say, objstore's ``RemoteError``), not its message,
    which may name keys, buckets, endpoints."""
    details = ", ".join(
        f"{name} {value}"
        for name in ("status", "code")
        if isinstance(value := getattr(exc, name, None), (int, str))
    )
    cause = f"{type(exc).__name__} ({details})" if details else type(exc).__name__
    return f"the storage is unavailable: {cause}; retry later"


def json_response(value: Any, status: int = 200) -> Response:
    return Response(codec.dumps(value), status_code=status, media_type="application/json")


class FileChunks:
    """The chunks of a blocking stream, each read in a worker thread; :meth:`aclose` closes
    the stream, whether or not a chunk was read. At most ``size`` bytes if given."""

    def __init__(self, stream: IO[bytes], size: int | None = None) -> None:
        self._stream = stream
        self._left = size
        self._closed = False

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        want = CHUNK if self._left is None else min(CHUNK, self._left)
        chunk = await asyncio.to_thread(self._stream.read, want) if want else b""
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        if self._left is not None:
            self._left -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._stream.close)


def file_response(
    stream: IO[bytes], media_type: str, *, size: int | None = None, headers: dict[str, str] | None = None
) -> StreamingResponse:
    """An answer streaming ``stream`` (``size`` bytes, sent as its Content-Length, if given),
    read in worker threads and closed once sent, or not sent (HEAD, an error)."""
    fields = dict(headers or {})
    if size is not None:
        fields["Content-Length"] = str(size)
    return StreamingResponse(FileChunks(stream, size), media_type=media_type, headers=fields)


# -- request bodies -----------------------------------------------------------------------


class _Body:
    """The body of one request as it arrives, within time bounds: each read of it may wait
    ``timeout`` seconds, and all of it must arrive within ``timeout + received / MIN_RATE``
    seconds of the request."""

    def __init__(self, receive: Callable[[], Awaitable[Message]], headers: Any, timeout: float) -> None:
        self._receive = receive
        self._timeout = timeout
        self._started = time.monotonic()
        self.received = 0
        length = headers.get("content-length")
        self.complete = "transfer-encoding" not in headers and length in (None, "0")
        """Whether all of the body arrived (or the request has none)."""

    async def receive(self) -> Message:
        """The next message of the body; ``BadRequestError`` if it stalls, trickles or breaks off."""
        if self.complete:
            return {"type": "http.request", "body": b"", "more_body": False}
        now = time.monotonic()
        deadline = self._started + self._timeout + self.received / MIN_RATE
        try:
            async with asyncio.timeout(max(0.0, min(self._timeout, deadline - now))):
                message = await self._receive()
        except TimeoutError:
            raise BadRequestError(
                f"it came too slowly: {self.received} bytes in {time.monotonic() - self._started:.1f} s"
            ) from None
        if message["type"] == "http.disconnect":
            raise BadRequestError(f"the client closed the connection after {self.received} bytes")
        self.received += len(message.get("body", b""))
        self.complete = not message.get("more_body", False)
        return message

    async def discard(self, most: int, pause: float) -> None:
        """Read and drop what is left of the body, at most ``most`` bytes, as long as each part
        of it comes within ``pause`` seconds."""
        left = most
        with contextlib.suppress(BadRequestError, TimeoutError):
            while not self.complete and left > 0:
                async with asyncio.timeout(pause):
                    left -= len((await self.receive()).get("body", b""))

    async def disconnected(self) -> None:
        """Return once the client is gone, discarding what is left of the body."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


BODY = "runstore.body"
"""The ASGI scope's key of the request's :class:`_Body`."""
PASSED = "runstore.passed"
"""The ASGI scope's key set once the request's token passed and its handler was called."""
LINGER = 4 << 20
"""Bytes of an unread body a server drops before it answers a request whose token passed, so
that a client sending its whole body before it reads gets the answer (401 and 403 read none);
it stops once the body pauses for LINGER_PAUSE seconds."""
LINGER_PAUSE = 0.25


class LimitedBody:
    """A request body read as it arrives, counted, at most ``limit`` bytes.

    Reading raises ``TooLargeError`` as soon as more than ``limit`` bytes arrived, whatever
    ``Content-Length`` said (or if the body is chunked), and ``BadRequestError`` if the
    body stalls, trickles, or breaks off (the server itself answers 400 to bad chunk sizes).
    """

    def __init__(self, request: Request, limit: int, what: str) -> None:
        self._body: _Body = request.scope[BODY]
        self.limit = limit
        self.what = what
        self.received = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self._body.complete:
            try:
                message = await self._body.receive()
            except BadRequestError as exc:
                raise BadRequestError(f"cannot read {self.what}: {exc.message}") from None
            chunk: bytes = message.get("body", b"")
            self.received += len(chunk)
            if self.received > self.limit:
                raise TooLargeError(f"{self.what} is over the limit of {self.limit} bytes")
            if chunk:
                yield chunk

    async def read(self) -> bytes:
        """All of the body."""
        return b"".join([chunk async for chunk in self])

    async def spool(self) -> BinaryIO:
        """All of the body in a temporary file (in memory up to :data:`SPOOL_MEMORY` bytes), at
        its start; written in worker threads. The caller closes it."""
        file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - returned open
        try:
            async for chunk in self:
                await asyncio.to_thread(file.write, chunk)
            file.seek(0)
        except BaseException:
            file.close()
            raise
        return cast(BinaryIO, file)


def read_body(request: Request, limit: int, what: str = "the body") -> LimitedBody:
    """The request's body, read up to ``limit`` bytes; ``TooLargeError`` if it says it has more.

    Every handler reads its request's body through this (or :func:`read_json`), so that
    what arrives is counted, chunked or not, whatever ``Content-Length`` claims.
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLargeError(f"{what} of {length} bytes is over the limit of {limit} bytes")
    return LimitedBody(request, limit, what)


async def read_json(request: Request, kind: type[T], limit: int | None = None) -> T:
    """The request's JSON body as a ``kind``; ``BadRequestError`` naming what is wrong.

    The body has at most ``limit`` bytes (default :data:`MAX_JSON_BODY`; ``TooLargeError``
    beyond) and nests at most :data:`codec.MAX_DEPTH` levels deep.
    """
    raw = await read_body(request, MAX_JSON_BODY if limit is None else limit).read()
    try:
        return codec.loads(kind, raw)
    except ValueError as exc:
        raise BadRequestError(f"invalid {kind.__name__}: {exc}") from exc


# -- routing ------------------------------------------------------------------------------


class MethodNotAllowedError(ServiceError):
    """The path is one of the app's, the method is not; answered 405."""

    kind = ErrorKind.BAD_REQUEST
    status = 405


@attrs.frozen
class _Rule:
    name: str
    route: Route
    segments: tuple[str, ...]

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The placeholders' values if ``segments`` (decoded) fit the template, else None."""
        if len(segments) != len(self.segments):
            return None
        values = {}
        for pattern, segment in zip(self.segments, segments, strict=True):
            if pattern.startswith("<"):
                if not segment:
                    return None
                values[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return values


def rules_of(table: type) -> list[_Rule]:
    """The rules of a table's routes: each one's name is its attribute name."""
    return [_Rule(name, route, tuple(route.template.split("/"))) for name, route in routes_of(table)]


def _segments(raw_path: bytes) -> list[str]:
    """A raw path split on "/", each segment percent-decoded on its own: an encoded "/" stays
    in its segment, and ".." is only a value."""
    try:
        return [unquote_to_bytes(segment).decode() for segment in raw_path.split(b"/")]
    except UnicodeDecodeError:
        raise BadRequestError("the path is not UTF-8") from None


def match(rules: list[_Rule], method: str, raw_path: bytes) -> tuple[_Rule, dict[str, str]]:
    """The rule ``method raw_path`` asks for (HEAD: a GET rule) and its values;
    ``NotExistError`` for an unknown path, :class:`MethodNotAllowedError` for a wrong method."""
    segments = _segments(raw_path)
    allowed = []
    for rule in rules:
        values = rule.match(segments)
        if values is not None:
            if rule.route.method == method or (method == "HEAD" and rule.route.method == "GET"):
                return rule, values
            allowed.append(rule.route.method)
    if allowed:
        raise MethodNotAllowedError(f"{method} is not allowed here; {', '.join(sorted(allowed))} is")
    raise NotExistError(f"no such path: {raw_path.decode('latin-1')}")


# -- the app ------------------------------------------------------------------------------


class JsonApp:
    """An app serving a table of routes: each one's handler is the method of its name.

    A handler takes the :class:`Request` and the route's placeholders, and returns a
    ``Response``; a coroutine function runs on the server's loop, a plain function in one of
    its worker threads. A subclass names its table in ``table``; one without a handler for
    every route of it is refused when the class is made (``TypeError``).
    """

    table: ClassVar[type]
    rules: ClassVar[list[_Rule]]
    unavailable_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions that mean a dependency (the store) failed for now: they answer 503
    ``unavailable``, the original logged with its traceback; any other one answers 500."""

    tokens: Tokens | None = None
    """The tokens the app accepts; None: every request is accepted (a trusted network only)."""
    takes_bodies: ClassVar[bool] = True
    """False: a request with a body is refused (413) before any of it is read."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name, _ in routes_of(cls.table) if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__name__} has no handler for the route(s) {', '.join(missing)}")
        cls.rules = rules_of(cls.table)

    def _authenticate(self, request: Request, route: Route) -> Identity | None:
        """The caller's identity; ``UnauthorizedError`` without a known token, ``ForbiddenError``
        with a token of another role. A refusal is logged, never the token."""
        if self.tokens is None or route.role is None:
            return None
        header = request.headers.get("authorization", "")
        caller = book_of(self.tokens).identify(header[len(BEARER) :]) if header.startswith(BEARER) else None
        if caller is not None and caller.role is route.role:
            return caller
        client = request.client.host if request.client else "?"
        where = f"{request.method} {request.url.path} from {client}"
        if caller is None:
            reason = "an unknown token" if header else "no token"
            log.warning("refused %s: %s", where, reason)
            raise UnauthorizedError(f"this request needs a {route.role.value} token; it has {reason}")
        log.warning(
            "refused %s: a %s token (%s) where a %s one is needed",
            where,
            caller.role.value,
            caller.name,
            route.role.value,
        )
        raise ForbiddenError(f"this request takes {route.role.value} tokens, not {caller.role.value} tokens")

    async def respond(self, request: Request) -> Response:
        """The answer to ``request``: its route's handler's, once its token passed (checked
        from the headers, before any of the body is read), or the error's."""
        try:
            rule, values = match(self.rules, request.method, request.scope["raw_path"])
            request.scope[IDENTITY] = self._authenticate(request, rule.route)
            if not self.takes_bodies and not request.scope[BODY].complete:
                raise TooLargeError("this API takes no request bodies")
            handler = getattr(self, rule.name)
            request.scope[PASSED] = True
            if inspect.iscoroutinefunction(handler):
                response: Response = await handler(request, **values)
            else:
                response = await asyncio.to_thread(handler, request, **values)
        except Exception as exc:
            return self.failure(request, exc)
        return response

    def failure(self, request: Request, exc: Exception) -> Response:
        """The answer to a request that raised ``exc``; logged unless it is a :class:`ServiceError`."""
        if isinstance(exc, ServiceError):
            return error_response(exc.kind, exc.message, getattr(exc, "status", None))
        if isinstance(exc, self.unavailable_errors):
            log.warning("a dependency failed in %s %s", request.method, request.url.path, exc_info=exc)
            return error_response(ErrorKind.UNAVAILABLE, unavailable_message(exc))
        log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ErrorKind.INTERNAL, "internal error")


# -- the server ---------------------------------------------------------------------------


THREADS = 16
"""A server's worker threads: how many blocking handlers and reads run at once (more wait)."""
KEEP_ALIVE_TIMEOUT = 10.0
"""Seconds a connection may be idle, or take to send a request's head, before it is closed."""
READ_TIMEOUT = 30.0
"""Seconds one read of a request body may wait; all of it must arrive within this and
``received / MIN_RATE`` seconds."""
SEND_TIMEOUT = 30.0
"""Seconds one write of an answer may wait for the client to read; past them, the connection is cut."""
GRACE = 1.0
"""Seconds :meth:`ServerThread.stop` lets requests end once their connections are cut (then cancels them)."""
STOP_TIMEOUT = 10.0
"""Seconds :meth:`ServerThread.stop` waits for the server's threads."""
BACKLOG = 1024


class _Aborted(Exception):
    """The connection was cut: nothing more is sent on it."""


class _Listener(socket.socket):
    """A listening socket that keeps the connections it accepts, by peer, to cut one at once."""

    def __init__(self, family: int) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.connections: weakref.WeakValueDictionary[tuple[str, int], socket.socket] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def accept(self) -> tuple[socket.socket, Any]:
        connection, peer = super().accept()
        with self._lock:
            self.connections[(str(peer[0]), int(peer[1]))] = connection
        return connection, peer

    def cut(self, peer: Any) -> None:
        """Shut the connection from ``peer`` down both ways: the loop sees it end, whatever it
        still had to send."""
        with self._lock:
            connection = self.connections.get((str(peer[0]), int(peer[1]))) if peer else None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def cut_all(self) -> None:
        with self._lock:
            connections = list(self.connections.values())
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Config(Config):
    """Hypercorn's configuration, serving on a listener made beforehand."""

    def __init__(self, listener: _Listener) -> None:
        super().__init__()
        self._listener = listener

    def create_sockets(self) -> Sockets:
        return Sockets(secure_sockets=[], insecure_sockets=[self._listener], quic_sockets=[])


class _Asgi:
    """The ASGI side of a :class:`JsonApp`: reads requests and sends answers within the server's bounds."""

    def __init__(self, app: JsonApp, listener: _Listener, read_timeout: float, send_timeout: float) -> None:
        self._app = app
        self._listener = listener
        self._read_timeout = read_timeout
        self._send_timeout = send_timeout

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope)
        body = _Body(receive, request.headers, self._read_timeout)
        scope[BODY] = body
        gone = asyncio.ensure_future(body.disconnected()) if body.complete else None
        try:
            response = await self._until_gone(self._app.respond(request), gone)
            if response is None:
                return  # the client left before its answer was ready
            if gone is None:  # the handler had the body; drop what is left of it while answering
                if scope.get(PASSED):
                    await body.discard(LINGER, LINGER_PAUSE)
                gone = asyncio.ensure_future(body.disconnected())
            sender = _Sender(send, self._send_timeout, self._listener, scope)
            await self._send(request, response, sender, gone)
        except _Aborted:
            pass
        finally:
            if gone is not None:
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone

    @staticmethod
    async def _until_gone(work: Awaitable[T], gone: asyncio.Future[None] | None) -> T | None:
        """The result of ``work``; None, ``work`` cancelled, if the client leaves first."""
        task = asyncio.ensure_future(work)
        if gone is None:
            return await task
        try:
            either: list[asyncio.Future[Any]] = [task, gone]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _send(
        self, request: Request, response: Response, sender: _Sender, gone: asyncio.Future[None]
    ) -> None:
        headers = list(response.raw_headers)
        body: _Body = request.scope[BODY]
        if not body.complete:
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        if not isinstance(response, StreamingResponse):
            await sender.start(response.status_code, headers)
            await sender.body(bytes(response.body), more=False)
            return
        chunks = cast(AsyncIterator[bytes], response.body_iterator)
        try:
            if request.method == "HEAD":  # the chunks are never started: nothing to end
                await sender.start(response.status_code, headers)
                await sender.body(b"", more=False)
                return
            try:
                first = await self._until_gone(_first(chunks), gone)
            except Exception as exc:  # before the status: it can still say what failed
                await self._send(request, self._app.failure(request, exc), sender, gone)
                return
            if first is None:
                return
            await sender.start(response.status_code, headers)
            try:
                await self._until_gone(self._pump(first, chunks, sender), gone)
            except _Aborted:
                raise
            except Exception as exc:  # the answer breaks off: the connection is closed
                self._app.failure(request, exc)
        finally:
            await _aclose(chunks)

    @staticmethod
    async def _pump(first: bytes, chunks: AsyncIterator[bytes], sender: _Sender) -> None:
        await sender.body(first, more=True)
        async for chunk in chunks:
            await sender.body(chunk, more=True)
        await sender.body(b"", more=False)


async def _first(chunks: AsyncIterator[bytes]) -> bytes:
    """The first chunk of an answer (b"" if it has none)."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return b""


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class _Sender:
    """Sends an answer, each message within ``timeout`` seconds; past them, the connection is cut."""

    def __init__(
        self,
        send: Callable[[Message], Awaitable[None]],
        timeout: float,
        listener: _Listener,
        scope: Message,
    ) -> None:
        self._send = send
        self._timeout = timeout
        self._listener = listener
        self._scope = scope

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self._message({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool) -> None:
        await self._message({"type": "http.response.body", "body": data, "more_body": more})

    async def _message(self, message: Message) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._send(message)
        except TimeoutError:
            client = self._scope.get("client")
            log.warning("cut the connection of %s: it read nothing for %g s", client, self._timeout)
            self._listener.cut(client)
            raise _Aborted from None


class ServerThread:
    """A hypercorn server for ``app`` on ``host:port`` (0: a free port), its asyncio loop in a
    thread of its own, blocking work in ``threads`` worker threads.

    A request waiting (a long poll, a followed log, a slow client) holds a coroutine, no
    thread. A connection idle, or still sending its request's head, is closed after
    ``keep_alive_timeout`` seconds; a read of a request body may wait ``read_timeout`` seconds
    and the whole body arrive within ``read_timeout + received / MIN_RATE`` seconds; a write
    of an answer may wait ``send_timeout`` seconds for the client to read, past which the
    connection is cut.
    """

    def __init__(
        self,
        app: JsonApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = THREADS,
        keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = _Listener(family)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(BACKLOG)
        except BaseException:
            self._listener.close()
            raise
        address = self._listener.getsockname()
        self._host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        self._port: int = address[1]
        self._config = _Config(self._listener)
        self._config.keep_alive_timeout = keep_alive_timeout
        self._config.graceful_timeout = GRACE
        self._config.errorlog = log
        self._config.include_server_header = False
        self._asgi = _Asgi(app, self._listener, read_timeout, send_timeout)
        self._threads = threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=f"server {self.url}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> ServerThread:
        self._thread.start()
        self._running.wait()
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        workers = ThreadPoolExecutor(self._threads, thread_name_prefix=f"server {self._port} worker")
        loop.set_default_executor(workers)
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("the server at %s failed", self.url)
        finally:
            try:
                for task in (tasks := asyncio.all_tasks(loop)):
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                workers.shutdown(wait=True, cancel_futures=True)
                self._listener.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._running.set()
        await serve(cast(Any, self._asgi), self._config, shutdown_trigger=self._stopping.wait)

    def stop(self) -> None:
        """Close the listening socket and cut every connection; requests still running then
        are cancelled :data:`GRACE` seconds later.

        Waits at most :data:`STOP_TIMEOUT` seconds for the server's threads (a blocking
        handler still running then is left to its thread, logged); a second call does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._loop is None or self._stopping is None:
            self._listener.close()
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._listener.cut_all()
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            log.warning("the server at %s did not stop within %g s", self.url, STOP_TIMEOUT)
