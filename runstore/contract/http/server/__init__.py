"""The servers of the runservice and the executor: ASGI apps on hypercorn, on an asyncio loop.

Handlers raise :class:`ServiceError` subclasses; :class:`JsonApp` turns them into a status
code and a JSON body, a failure of a dependency (its ``unavailable_errors``: the
runservice's are objstore's ``RemoteError``) into 503 ``unavailable``, and any other
exception into a plain "internal error" so no internals leak. An app takes its paths from
a table of :mod:`runstore.contract.routes`; a handler is a coroutine (run on the loop) or a
plain function (run in a worker thread: it does blocking I/O). :class:`ServerThread` serves
an app so that a waiting request costs a coroutine, not a thread, and times out idle,
trickling and stalled clients (docs/runservice.md, "Bounded waits").

Modules: :mod:`.routing` (route matching), :mod:`.bodies` (request bodies),
:mod:`.responses` (answers), :mod:`.app` (:class:`JsonApp`), :mod:`.listener` (the
listening socket), :mod:`.asgi` (requests read, answers sent, within bounds),
:mod:`.serving` (:class:`ServerThread`), :mod:`.arguments` (``--listen``).

Hypercorn rather than uvicorn: hypercorn closes a connection that is idle or still
trickling its request head after ``keep_alive_timeout``, where uvicorn has no timeout
before a connection's first request is complete.
"""

from __future__ import annotations

from runstore.extras import require

require("runservice", "runstore.contract.http.server", "hypercorn", "starlette")

# ruff: noqa: E402 - the extra is checked first, so a missing one is named

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runstore.contract.http.server.app import JsonApp, identity
from runstore.contract.http.server.arguments import add_listen_argument, listen_address
from runstore.contract.http.server.bodies import LimitedBody, read_body, read_json
from runstore.contract.http.server.responses import error_response, file_response, json_response
from runstore.contract.http.server.serving import THREADS, ServerThread

__all__ = [
    "THREADS",
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
