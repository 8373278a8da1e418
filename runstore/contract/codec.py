"""JSON for the attrs documents of the run service: attrs classes, enums, datetimes, lists, dicts."""

from __future__ import annotations

import enum
import itertools
import json
import re
import types
import typing
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

MAX_DEPTH = 32
"""The deepest nesting of arrays and objects :func:`loads` decodes (the documents need 6)."""

# A string, or an unterminated one to the end: the optional closing quote keeps the
# search linear (a required one made it retry from every later quote).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_DEPTH_STEP = tuple(1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256))


def to_data(value: Any) -> Any:
    """A JSON-ready form of ``value``."""
    if attrs.has(type(value)):
        return {field.name: to_data(getattr(value, field.name)) for field in attrs.fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, (list, tuple)):
        return [to_data(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_data(item) for key, item in value.items()}
    return value


def from_data(kind: Any, data: Any) -> Any:
    """The ``kind`` value that :func:`to_data` gave ``data`` for; ``ValueError`` if it does not fit."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if data is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return from_data(option, data)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1]
        _expect(data, list, kind)
        return [from_data(item, element) for element in data]
    if origin is dict:
        key_type, item = typing.get_args(kind)
        _expect(data, dict, kind)
        return {from_data(key_type, key): from_data(item, element) for key, element in data.items()}
    if attrs.has(kind):
        _expect(data, dict, kind)
        hints = typing.get_type_hints(kind)
        fields = {field.name: field for field in attrs.fields(kind)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown field(s) of {kind.__name__}: {', '.join(unknown)}")
        missing = [
            name for name, field in fields.items() if field.default is attrs.NOTHING and name not in data
        ]
        if missing:
            raise ValueError(f"{kind.__name__} misses field(s): {', '.join(missing)}")
        values = {}
        for name, value in data.items():
            try:
                values[name] = from_data(hints[name], value)
            except ValueError as exc:
                raise ValueError(f"{kind.__name__}.{name}: {exc}") from exc
        try:
            return kind(**values)
        except TypeError as exc:
            raise ValueError(f"{kind.__name__}: {exc}") from exc
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(data)
        except ValueError as exc:
            raise ValueError(f"{data!r} is not one of {[member.value for member in kind]}") from exc
    if kind is datetime:
        _expect(data, str, kind)
        try:
            parsed = datetime.fromisoformat(data)
        except ValueError as exc:
            raise ValueError(f"{data!r} is not an ISO 8601 time") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"{data!r} has no time zone")
        return parsed.astimezone(UTC)
    if kind is Any:
        return data
    if kind is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    _expect(data, kind, kind)
    return data


def _expect(data: Any, python_type: type, kind: Any) -> None:
    if not isinstance(data, python_type) or (python_type is int and isinstance(data, bool)):
        raise ValueError(f"expected {getattr(kind, '__name__', kind)}, got {type(data).__name__}")


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes."""
    return json.dumps(to_data(value), separators=(",", ":"), sort_keys=True).encode()


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of JSON ``text`` nest; linear, without recursion.

    Exact for valid JSON; for malformed text, at least as deep as a decoder gets before
    it fails.
    """
    brackets = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def loads(kind: type[T], raw: bytes) -> T:
    """The ``kind`` value in JSON bytes; ``ValueError`` if the JSON or its shape is wrong.

    JSON nested deeper than :data:`MAX_DEPTH` is refused before it is decoded.
    """
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from exc
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested {depth} deep is over the limit of {MAX_DEPTH}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # not expected below MAX_DEPTH; a bad request all the same
        raise ValueError(f"JSON nested too deep (the limit is {MAX_DEPTH})") from exc
    return from_data(kind, data)  # type: ignore[no-any-return]
