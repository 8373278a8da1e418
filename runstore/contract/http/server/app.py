"""The app: a table's routes served by handlers, with tokens checked and errors answered as JSON."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response

from runstore.contract.auth import BEARER, Identity, Tokens, book_of
from runstore.contract.errors import (
    ErrorKind,
    ForbiddenError,
    ServiceError,
    TooLargeError,
    UnauthorizedError,
)
from runstore.contract.http.server.bodies import BODY, PASSED
from runstore.contract.http.server.responses import error_response, unavailable_message
from runstore.contract.http.server.routing import _Rule, match, rules_of
from runstore.contract.routes import Route, routes_of

log = logging.getLogger(__name__)

IDENTITY = "runstore.identity"
"""The ASGI scope's key of the caller's :class:`Identity` (None where the app takes no tokens)."""


def identity(request: Request) -> Identity | None:
    """Who made ``request``, as its token proved; None if the app takes no tokens."""
    found: Identity | None = request.scope.get(IDENTITY)
    return found


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
