"""The client of the runservice and the executor, over urllib3.

:class:`ServiceClient` sends a :class:`Route`'s requests; an error response becomes a
:class:`RemoteServiceError` of the kind the server sent (``retryable`` if ``unavailable``),
no answer at all an :class:`UnreachableError`. A :class:`Download` must arrive by its
deadline (docs/runservice.md, "Bounded waits").
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlencode

import urllib3

from runstore.contract import codec
from runstore.contract.auth import BEARER
from runstore.contract.errors import (
    ErrorKind,
    InternalError,
    RemoteServiceError,
    ServiceError,
)
from runstore.contract.routes import Route

T = TypeVar("T")

MIN_RATE = 256 << 10
"""Bytes per second a download must average: one of ``size`` bytes that has not arrived
``timeout + size / MIN_RATE`` seconds after its request was sent breaks off."""


class ServiceClient:
    """Requests to a run service component at ``base_url``, by :class:`Route`.

    The typed clients (:mod:`runstore.contract.clients`) are built on it; the tests use
    it for requests no typed client sends (malformed bodies, say). Connecting may take 5 s
    and each socket read ``timeout`` seconds; a :class:`Download` of ``size`` bytes must
    arrive within ``timeout + size / min_rate`` seconds (:data:`MIN_RATE` bytes/s). Each
    request carries ``token`` (if any) as its bearer token; at most ``connections`` are kept
    open for reuse.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        min_rate: float = MIN_RATE,
        connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.min_rate = min_rate
        self._headers = {"Authorization": BEARER + token} if token else {}
        self._http = urllib3.PoolManager(
            maxsize=connections, timeout=urllib3.Timeout(connect=5.0, read=timeout), retries=False
        )

    def request(
        self,
        route: Route,
        values: Mapping[str, str | int] | None = None,
        *,
        body: bytes | BinaryIO | Iterator[bytes] | None = None,
        fields: Mapping[str, str | list[str]] | None = None,
        stream: bool = False,
        wait: float = 0.0,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request to ``route`` (its placeholders filled from ``values``, ``fields``
        as the query), whose answer may take ``wait`` seconds more than the client's
        ``timeout`` (a long poll); ``RemoteServiceError`` for an error response,
        ``UnreachableError`` if none came."""
        url = self.base_url + route.path(**(values or {}))
        if fields:
            url += "?" + urlencode(fields, doseq=True)
        try:
            response = self._http.request(
                route.method,
                url,
                body=body,
                headers=self._headers,
                preload_content=not stream,
                timeout=urllib3.Timeout(connect=5.0, read=self.timeout + wait),
            )
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
        wait: float = 0.0,
    ) -> bytes:
        """Send ``value`` as JSON (or ``body`` as it is, or nothing); the answer's body."""
        payload = codec.dumps(value) if value is not None else body
        return self.request(route, values, body=payload, fields=fields, wait=wait).data

    def json(
        self,
        route: Route,
        kind: type[T],
        values: Mapping[str, str | int] | None = None,
        *,
        value: Any = None,
        body: bytes | BinaryIO | None = None,
        fields: Mapping[str, str | list[str]] | None = None,
        wait: float = 0.0,
    ) -> T:
        """:meth:`send`, and the answer as a ``kind``; ``InternalError`` if it is not one."""
        raw = self.send(route, values, value=value, body=body, fields=fields, wait=wait)
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
        deadline: bool = True,
    ) -> Download:
        """The answer's body as a stream, received while it is read, by a deadline
        (:class:`Download`; without ``deadline``, each socket read waits ``timeout`` alone: for
        an answer that streams as something happens, a followed log)."""
        started = time.monotonic()
        response = self.request(route, values, fields=fields, stream=True)
        min_rate = self.min_rate if deadline else 0.0
        return Download(response, timeout=self.timeout, min_rate=min_rate, started=started)

    def close(self) -> None:
        self._http.clear()


class Download(io.RawIOBase):
    """A response body, received while it is read; ``headers`` are the response's.

    A body that breaks off or ends short of its ``Content-Length`` raises
    ``UnreachableError`` naming how much arrived; closing returns the connection (one
    not read to its end is dropped). The whole transfer has a deadline: ``timeout + size /
    min_rate`` seconds from ``started`` (default: now), ``size`` being the ``Content-Length``
    or, without one, what has arrived. It is checked after each read of the socket (a read
    that waits more than the client's ``timeout`` fails by itself); past it, ``UnreachableError``
    says the download was too slow. A ``min_rate`` of 0 sets no deadline on the whole.
    """

    def __init__(
        self,
        response: urllib3.BaseHTTPResponse,
        *,
        timeout: float = 30.0,
        min_rate: float = MIN_RATE,
        started: float | None = None,
    ) -> None:
        super().__init__()
        self._response = response
        self.headers = response.headers
        self.received = 0
        self.timeout = timeout
        self.min_rate = min_rate
        self.started = time.monotonic() if started is None else started
        length = response.headers.get("Content-Length", "")
        self.length = int(length) if length.isascii() and length.isdigit() else None
        self._error: UnreachableError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Read what one socket read brings (0 at the end) into ``buffer``; once a read failed,
        every later one raises the same error (never a short body that looks whole)."""
        if self._error is not None:
            raise UnreachableError(self._error.message)
        view = memoryview(buffer).cast("B")
        try:
            data = self._response.read1(len(view))
        except urllib3.exceptions.HTTPError as exc:
            self._error = UnreachableError(f"the download broke off after {self.received} bytes: {exc}")
            raise self._error from exc
        view[: len(data)] = data
        self.received += len(data)
        if self.min_rate:
            self._check_deadline()
        return len(data)

    def deadline(self) -> float:
        """Seconds from ``started`` the transfer may take, for what is known of its size now."""
        return self.timeout + self._size() / self.min_rate

    def _size(self) -> int:
        return self.received if self.length is None else max(self.length, self.received)

    def _check_deadline(self) -> None:
        elapsed = time.monotonic() - self.started
        allowed = self.deadline()
        if elapsed > allowed:
            self._error = UnreachableError(
                f"the download broke off after {self.received} bytes: too slow, {elapsed:.2f} s is over "
                f"its deadline of {allowed:.2f} s (a timeout of {self.timeout:g} s and {self._size()} bytes "
                f"at {self.min_rate:g} bytes/s)"
            )
            raise self._error

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
