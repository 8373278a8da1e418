"""Answers: JSON documents, errors, and streams read in worker threads."""

from __future__ import annotations

import asyncio
import json
from typing import IO, Any

from starlette.responses import Response, StreamingResponse

from runstore.contract import codec
from runstore.contract.errors import ErrorKind

CHUNK = 1 << 16
"""Bytes of a streamed answer read at once."""


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
    """The JSON answer of ``value`` (as :mod:`runstore.contract.codec` writes it), with ``status``."""
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
