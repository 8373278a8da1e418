"""The ASGI side of a server: a :class:`JsonApp`'s requests read and its answers sent within
the server's bounds, a request's work cancelled if its client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runstore.contract.http.server.app import JsonApp
from runstore.contract.http.server.bodies import BODY, LINGER, LINGER_PAUSE, PASSED, Message, _Body
from runstore.contract.http.server.listener import _Listener

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Aborted(Exception):
    """The connection was cut: nothing more is sent on it."""


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
