"""Route matching: a request's method and raw path against the rules of a route table."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import attrs

from runstore.contract.errors import BadRequestError, ErrorKind, NotExistError, ServiceError
from runstore.contract.routes import Route, routes_of


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
