"""HTTP plumbing shared by the runservice and the executor: werkzeug apps, a urllib3 client.

Handlers raise :class:`ServiceError` subclasses; :class:`JsonApp` turns them (and
werkzeug's own HTTP errors) into a status code and a JSON body, and turns any other
exception into a plain "internal error" so no internals leak. :class:`ServiceClient`
does the reverse: an error response becomes a :class:`RemoteServiceError` of the same
kind.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlencode

import urllib3
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from . import codec
from .errors import BadRequestError, ErrorKind, RemoteServiceError, ServiceError

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_JSON_BODY = 1 << 20
Handler = Callable[..., Response]


def error_response(kind: ErrorKind, message: str) -> Response:
    body = json.dumps({"kind": kind.value, "message": message})
    return Response(body, status=kind.status, content_type="application/json")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(codec.dumps(value), status=status, content_type="application/json")


def read_json(request: Request, kind: type[T]) -> T:
    """The request's JSON body as a ``kind``; ``BadRequestError`` naming what is wrong."""
    length = request.content_length
    if length is not None and length > MAX_JSON_BODY:
        raise BadRequestError(f"body of {length} bytes is over the limit of {MAX_JSON_BODY}")
    raw = request.stream.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise BadRequestError(f"body is over the limit of {MAX_JSON_BODY} bytes")
    try:
        return codec.loads(kind, raw)
    except ValueError as exc:
        raise BadRequestError(f"invalid {kind.__name__}: {exc}") from exc


class JsonApp:
    """A WSGI app whose routes (werkzeug rules with ``endpoint`` = handler name) return Responses."""

    routes: Map

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, values = self.routes.bind_to_environ(environ).match()
            response: Response = getattr(self, endpoint)(request, **values)
        except ServiceError as exc:
            response = error_response(exc.kind, exc.message)
        except HTTPException as exc:
            kind = ErrorKind.from_status(exc.code or 500)
            response = error_response(kind, exc.description or exc.name)
            response.status_code = exc.code or 500
        except Exception:
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
    """JSON and streams over HTTP to a run service component at ``base_url``."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = urllib3.PoolManager(
            maxsize=8, timeout=urllib3.Timeout(connect=5.0, read=timeout), retries=False
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | BinaryIO | Iterator[bytes] | None = None,
        fields: dict[str, str | list[str]] | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request; raise ``RemoteServiceError`` for an error response."""
        url = self.base_url + path
        if fields:
            url += "?" + urlencode(fields, doseq=True)
        try:
            response = self._http.request(method, url, body=body, preload_content=not stream)
        except urllib3.exceptions.HTTPError as exc:
            raise UnreachableError(f"{method} {url} failed: {exc}") from exc
        if response.status >= 400:
            raw = response.data if not stream else response.read()
            response.release_conn()
            raise _remote_error(response.status, raw)
        return response

    def get_json(self, path: str, kind: type[T], **fields: str | list[str]) -> T:
        return codec.loads(kind, self.request("GET", path, fields=fields or None).data)

    def send_json(self, method: str, path: str, value: Any, kind: type[T] | None = None) -> T | None:
        response = self.request(method, path, body=codec.dumps(value))
        return codec.loads(kind, response.data) if kind is not None else None

    def close(self) -> None:
        self._http.clear()


class UnreachableError(ServiceError):
    """The other component did not answer (connection refused, timeout)."""

    kind = ErrorKind.INTERNAL


def _remote_error(status: int, raw: bytes) -> RemoteServiceError:
    try:
        body = json.loads(raw)
        kind = ErrorKind(body["kind"])
        message = str(body["message"])
    except (ValueError, KeyError, TypeError):
        kind = ErrorKind.from_status(status)
        message = raw[:200].decode(errors="replace")
    return RemoteServiceError(kind, message, status)
