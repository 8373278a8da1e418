"""The servers of the runservice and the executor: werkzeug apps on a waitress server.

Handlers raise :class:`ServiceError` subclasses; :class:`JsonApp` turns them (and
werkzeug's own HTTP errors) into a status code and a JSON body, a failure of a
dependency (its ``unavailable_errors``: the runservice's are objstore's ``RemoteError``)
into 503 ``unavailable``, and any other exception into a plain "internal error" so no
internals leak. An app takes its paths from a table of :mod:`runstore.contract.routes`.
:class:`ServerThread` serves an app with bounded threads and connections and times out
stalled clients (docs/runservice.md, "Bounded waits").
"""

from __future__ import annotations

from runstore.extras import require

require("runservice", "runstore.contract.http.server", "waitress", "werkzeug")

# ruff: noqa: E402 - the extra is checked first, so a missing one is named

import argparse
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, ClassVar, TypeVar, cast

import waitress.server  # type: ignore[import-untyped]
from waitress import wasyncore
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from runstore.contract import codec
from runstore.contract.auth import BEARER, Identity, Tokens, book_of
from runstore.contract.errors import (
    BadRequestError,
    ErrorKind,
    ForbiddenError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
)
from runstore.contract.routes import Route, routes_of

T = TypeVar("T")
log = logging.getLogger(__name__)


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



def route_map(table: type) -> Map:
    """The werkzeug ``Map`` of a table: each route's endpoint is its attribute name."""
    return Map(
        [Rule(route.template, methods=[route.method], endpoint=name) for name, route in routes_of(table)]
    )


MAX_JSON_BODY = 1 << 20
"""The most bytes a JSON request body may have, however it is sent."""


IDENTITY = "runstore.identity"
"""The WSGI environ's key of the caller's :class:`Identity` (None where the app takes no tokens)."""


def identity(request: Request) -> Identity | None:
    """Who made ``request``, as its token proved; None if the app takes no tokens."""
    found: Identity | None = request.environ.get(IDENTITY)
    return found


def _without_file_wrapper(app: Any) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """``app`` without waitress's ``wsgi.file_wrapper``, which would read a file in the server's
    I/O thread, seeking back after each send (a store's stream: a ranged read each time);
    werkzeug's ``wrap_file`` then falls back to an iterable, read by the worker thread."""

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.pop("wsgi.file_wrapper", None)
        return cast(Iterable[bytes], app(environ, start_response))

    return wsgi


def error_response(kind: ErrorKind, message: str) -> Response:
    body = json.dumps({"kind": kind.value, "message": message})
    return Response(body, status=kind.status, content_type="application/json")


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
    return Response(codec.dumps(value), status=status, content_type="application/json")


class LimitedBody(io.RawIOBase):
    """A request body that counts what it reads and stops past ``limit`` bytes.

    Reading raises ``TooLargeError`` as soon as more than ``limit`` bytes arrived, whatever
    ``Content-Length`` said (or if the body is chunked), and ``BadRequestError`` if the
    body breaks off or is malformed (bad chunk sizes); ``error`` keeps that error, for a
    caller whose callee wrapped it (see :meth:`reraise`).
    """

    def __init__(self, stream: IO[bytes], limit: int, what: str) -> None:
        super().__init__()
        self._stream = stream
        self.limit = limit
        self.what = what
        self.received = 0
        self.error: ServiceError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            raise type(self.error)(self.error.message)
        view = memoryview(buffer).cast("B")
        try:
            data = self._stream.read(min(len(view), self.limit + 1 - self.received))
        except OSError as exc:
            self.error = BadRequestError(f"cannot read {self.what}: {exc}")
            raise self.error from exc
        view[: len(data)] = data
        self.received += len(data)
        if self.received > self.limit:
            self.error = TooLargeError(f"{self.what} is over the limit of {self.limit} bytes")
            raise self.error
        return len(data)

    def reraise(self, cause: BaseException) -> None:
        """Raise the body's own error (from ``cause``) if reading it failed and ``cause`` is not it."""
        if self.error is not None and cause is not self.error:
            raise type(self.error)(self.error.message) from cause


def read_body(request: Request, limit: int, what: str = "the body") -> LimitedBody:
    """The request's body, read up to ``limit`` bytes; ``TooLargeError`` if it says it has more.

    Every handler reads its request's body through this (or :func:`read_json`), so that
    what arrives is counted, chunked or not, whatever ``Content-Length`` claims.
    """
    length = request.content_length
    if length is not None and length > limit:
        raise TooLargeError(f"{what} of {length} bytes is over the limit of {limit} bytes")
    return LimitedBody(request.stream, limit, what)


def read_json(request: Request, kind: type[T], limit: int | None = None) -> T:
    """The request's JSON body as a ``kind``; ``BadRequestError`` naming what is wrong.

    The body has at most ``limit`` bytes (default :data:`MAX_JSON_BODY`; ``TooLargeError``
    beyond) and nests at most :data:`codec.MAX_DEPTH` levels deep.
    """
    body = read_body(request, MAX_JSON_BODY if limit is None else limit)
    raw = body.read()
    try:
        return codec.loads(kind, raw)
    except ValueError as exc:
        raise BadRequestError(f"invalid {kind.__name__}: {exc}") from exc


class JsonApp:
    """A WSGI app serving a table of routes: each one's handler is the method of its name.

    A subclass names its table in ``table``; one without a handler for every route of
    it is refused when the class is made (``TypeError``).
    """

    table: ClassVar[type]
    _map: ClassVar[Map]
    unavailable_errors: ClassVar[tuple[type[Exception], ...]] = ()
    """Exceptions that mean a dependency (the store) failed for now: they answer 503
    ``unavailable``, the original logged with its traceback; any other one answers 500."""

    def _authenticate(self, request: Request, route: Route) -> Identity | None:
        """The caller's identity; ``UnauthorizedError`` without a known token, ``ForbiddenError``
        with a token of another role. A refusal is logged, never the token."""
        if self.tokens is None or route.role is None:
            return None
        header = request.headers.get("Authorization", "")
        caller = book_of(self.tokens).identify(header[len(BEARER) :]) if header.startswith(BEARER) else None
        if caller is not None and caller.role is route.role:
            return caller
        where = f"{request.method} {request.path} from {request.remote_addr}"
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name, _ in routes_of(cls.table) if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__name__} has no handler for the route(s) {', '.join(missing)}")
        cls._map = route_map(cls.table)

    tokens: Tokens | None = None
    """The tokens the app accepts; None: every request is accepted (a trusted network only)."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, values = self._map.bind_to_environ(environ).match()
            environ[IDENTITY] = self._authenticate(request, getattr(self.table, endpoint))
            response: Response = getattr(self, endpoint)(request, **values)
        except ServiceError as exc:
            response = error_response(exc.kind, exc.message)
        except HTTPException as exc:
            kind = ErrorKind.from_status(exc.code or 500)
            response = error_response(kind, exc.description or exc.name)
            response.status_code = exc.code or 500
        except Exception as exc:
            if isinstance(exc, self.unavailable_errors):
                log.warning("a dependency failed in %s %s", request.method, request.path, exc_info=True)
                response = error_response(ErrorKind.UNAVAILABLE, unavailable_message(exc))
            else:
                log.exception("internal error in %s %s", request.method, request.path)
                response = error_response(ErrorKind.INTERNAL, "internal error")
        return response(environ, start_response)


THREADS = 8
"""A server's worker threads: how many requests it runs the app on at once (more wait in its queue)."""
CONNECTION_LIMIT = 100
"""The most client connections a server keeps open; more wait, not accepted, in the listen backlog."""
CHANNEL_TIMEOUT = 30
"""Seconds a connection may stay idle, stalled in the middle of a request or reading nothing of its
answer before the server closes it."""
MAX_REQUEST_BODY = (1 << 30) + (1 << 20)
"""Bytes of a request body from which the server answers 413 itself, before any app sees it: above
every app's own limit (the largest is the runservice's cache upload, 1 GiB), so that those answer."""
STOP_TIMEOUT = 10.0
"""Seconds :meth:`ServerThread.stop` waits for the server's threads."""
_SERVER_SOCKETS = 2  # waitress counts its listening socket and its trigger pipe among its connections


class ServerThread:
    """A waitress server for ``app`` on ``host:port`` (0: a free port), its loop in a thread of its own.

    Waitress receives each request whole (a body past 512 KiB spooled to a temporary file) before
    one of its ``threads`` worker threads runs the app on it, so a slow client holds no worker. It
    keeps at most ``connection_limit`` client connections open (more wait in the listen backlog),
    closes a connection idle, stalled mid-request or reading nothing of its answer for
    ``channel_timeout`` seconds (checked every second), and answers a body of
    ``max_request_body_size`` bytes or more with its own 413.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = THREADS,
        connection_limit: int = CONNECTION_LIMIT,
        channel_timeout: int = CHANNEL_TIMEOUT,
        max_request_body_size: int = MAX_REQUEST_BODY,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family)
        self._map: dict[int, Any] = {}
        try:
            self._server: Any = waitress.server.create_server(
                _without_file_wrapper(app),
                map=self._map,
                sockets=[listener],
                threads=threads,
                connection_limit=connection_limit + _SERVER_SOCKETS,
                channel_timeout=channel_timeout,
                cleanup_interval=1,
                max_request_body_size=max_request_body_size,
                asyncore_use_poll=True,  # select() fails past 1024 descriptors
            )
        except BaseException:
            listener.close()
            raise
        address = listener.getsockname()
        self._host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        self._port: int = address[1]
        self._channel_timeout = channel_timeout
        self._stopping = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=f"server {self.url}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def _serve(self) -> None:
        checked = 0.0
        while not self._stopping.is_set():
            wasyncore.loop(timeout=1.0, use_poll=True, map=self._map, count=1)
            if (now := time.time()) >= checked + 1.0:  # time.time(): waitress's clock
                checked = now
                self._close_unread(now)

    def _close_unread(self, now: float) -> None:
        """Close each connection whose answer has sent nothing for ``channel_timeout`` seconds:
        its worker thread, waiting to write more, is freed (waitress times out only connections
        whose request it is not serving)."""
        cutoff = now - self._channel_timeout
        for channel in list(self._server.active_channels.values()):
            if channel.requests and channel.total_outbufs_len and channel.last_activity < cutoff:
                channel.handle_close()

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the server's threads.

        Waits at most :data:`STOP_TIMEOUT` seconds in all (a request still running then is left
        to its worker thread, logged); a second call does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + STOP_TIMEOUT
        if self._thread.ident is not None:
            self._stopping.set()
            self._server.pull_trigger()  # wakes the loop from its poll
            self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            log.warning("the loop of the server at %s did not end; its connections stay open", self.url)
            return
        trigger = self._server.trigger
        for dispatcher in list(self._map.values()):
            if dispatcher is self._server:
                wasyncore.dispatcher.close(dispatcher)  # the listening socket (close() ends the trigger too)
            elif dispatcher is not trigger:
                dispatcher.handle_close()  # wakes a worker waiting to write to it
        dispatcher_threads = self._server.task_dispatcher
        dispatcher_threads.shutdown(cancel_pending=True, timeout=max(0.0, deadline - time.monotonic()))
        if dispatcher_threads.threads:
            log.warning(
                "%d worker thread(s) of the server at %s still run", len(dispatcher_threads.threads), self.url
            )
        else:
            trigger.close()  # only once no worker may pull it: its descriptors could be reused


