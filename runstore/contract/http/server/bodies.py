"""Request bodies: read as they arrive, within time bounds, counted against a limit."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, BinaryIO, TypeVar, cast

from starlette.requests import Request

from runstore.contract import codec
from runstore.contract.errors import BadRequestError, TooLargeError
from runstore.contract.http.client import MIN_RATE

T = TypeVar("T")
Message = MutableMapping[str, Any]
"""An ASGI message or scope."""

MAX_JSON_BODY = 1 << 20
"""The most bytes a JSON request body may have, however it is sent."""
SPOOL_MEMORY = 1 << 20
"""Bytes of a spooled request body held in memory; past them it goes to a temporary file."""


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
