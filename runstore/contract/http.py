"""HTTP plumbing shared by the runservice and the executor: werkzeug apps, a urllib3 client.

Handlers raise :class:`ServiceError` subclasses; :class:`JsonApp` turns them (and
werkzeug's own HTTP errors) into a status code and a JSON body, a failure of a
dependency (its ``unavailable_errors``: the runservice's are objstore's ``RemoteError``)
into 503 ``unavailable``, and any other exception into a plain "internal error" so no
internals leak. :class:`ServiceClient` does the reverse: an error response becomes a
:class:`RemoteServiceError` of the same kind (``retryable`` if ``unavailable``). Both
take their paths from a table of :mod:`runstore.contract.routes`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, BinaryIO, ClassVar, TypeVar
from urllib.parse import urlencode

import urllib3
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from runstore.contract import codec
from runstore.contract.errors import (
    BadRequestError,
    ErrorKind,
    InternalError,
    RemoteServiceError,
    ServiceError,
    TooLargeError,
)
from runstore.contract.routes import Route, route_map, routes_of

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


MAX_JSON_BODY = 1 << 20
"""The most bytes a JSON request body may have, however it is sent."""
Handler = Callable[..., Response]


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name, _ in routes_of(cls.table) if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"{cls.__name__} has no handler for the route(s) {', '.join(missing)}")
        cls._map = route_map(cls.table)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, values = self._map.bind_to_environ(environ).match()
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


class ServerThread:
    """A threaded werkzeug server for ``app`` on ``host:port`` (0: a free port)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log: requests are frequent
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.server_port}"

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.ident is not None:  # shutdown() waits for serve_forever, so only once started
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()


class ServiceClient:
    """Requests to a run service component at ``base_url``, by :class:`Route`.

    The typed clients (:mod:`runstore.contract.clients`) are built on it; the tests use
    it for requests no typed client sends (malformed bodies, say).
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = urllib3.PoolManager(
            maxsize=8, timeout=urllib3.Timeout(connect=5.0, read=timeout), retries=False
        )

    def request(
        self,
        route: Route,
        values: Mapping[str, str | int] | None = None,
        *,
        body: bytes | BinaryIO | Iterator[bytes] | None = None,
        fields: Mapping[str, str | list[str]] | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request to ``route`` (its placeholders filled from ``values``, ``fields``
        as the query); ``RemoteServiceError`` for an error response, ``UnreachableError``
        if none came."""
        url = self.base_url + route.path(**(values or {}))
        if fields:
            url += "?" + urlencode(fields, doseq=True)
        try:
            response = self._http.request(route.method, url, body=body, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            raise UnreachableError(f"{route.method} {url} failed: {exc}") from exc
        if response.status >= 400:
            try:
                raw = response.data if not stream else response.read()
            except urllib3.exceptions.HTTPError as exc:
                raise UnreachableError(f"{route.method} {url}: the error answer broke off: {exc}") from exc
            finally:
                response.release_conn()
            raise _remote_error(response.status, raw)
        return response

    def send(
        self,
        route: Route,
        values: Mapping[str, str | int] | None = None,
        *,
        value: Any = None,
        body: bytes | BinaryIO | None = None,
        fields: Mapping[str, str | list[str]] | None = None,
    ) -> bytes:
        """Send ``value`` as JSON (or ``body`` as it is, or nothing); the answer's body."""
        payload = codec.dumps(value) if value is not None else body
        return self.request(route, values, body=payload, fields=fields).data

    def json(
        self,
        route: Route,
        kind: type[T],
        values: Mapping[str, str | int] | None = None,
        *,
        value: Any = None,
        body: bytes | BinaryIO | None = None,
        fields: Mapping[str, str | list[str]] | None = None,
    ) -> T:
        """:meth:`send`, and the answer as a ``kind``; ``InternalError`` if it is not one."""
        raw = self.send(route, values, value=value, body=body, fields=fields)
        try:
            return codec.loads(kind, raw)
        except ValueError as exc:
            raise InternalError(
                f"{self.base_url} answered {route.template} with a malformed {kind}: {exc}"
            ) from exc

    def open(
        self,
        route: Route,
        values: Mapping[str, str | int] | None = None,
        *,
        fields: Mapping[str, str | list[str]] | None = None,
    ) -> Download:
        """The answer's body as a stream, received while it is read."""
        return Download(self.request(route, values, fields=fields, stream=True))

    def close(self) -> None:
        self._http.clear()


class Download(io.RawIOBase):
    """A response body, received while it is read; ``headers`` are the response's.

    A body that breaks off or ends short of its ``Content-Length`` raises
    ``UnreachableError`` naming how much arrived; closing returns the connection (one
    not read to its end is dropped).
    """

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        super().__init__()
        self._response = response
        self.headers = response.headers
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            count = self._response.readinto(buffer)
        except urllib3.exceptions.HTTPError as exc:
            raise UnreachableError(f"the download broke off after {self.received} bytes: {exc}") from exc
        self.received += count
        return count

    def close(self) -> None:
        if not self.closed:
            try:
                if not self._response.closed:
                    self._response.close()  # not read to its end: the connection is dropped
                self._response.release_conn()
            finally:
                super().close()


class UnreachableError(ServiceError):
    """The other component did not answer (connection refused, timeout); ``retryable``."""

    kind = ErrorKind.UNAVAILABLE


def _remote_error(status: int, raw: bytes) -> RemoteServiceError:
    try:
        body = json.loads(raw)
        kind = ErrorKind(body["kind"])
        message = str(body["message"])
    except (ValueError, KeyError, TypeError):
        kind = ErrorKind.from_status(status)
        message = raw[:200].decode(errors="replace")
    return RemoteServiceError(kind, message, status)
