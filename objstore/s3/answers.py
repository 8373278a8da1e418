"""S3's XML answers read into values; a cut, malformed or incomplete answer is a :class:`Failure`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import urllib3

from ..errors import RemoteError
from .failures import TRANSIENT_CODES, Failure, integrity_failure

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
T = TypeVar("T")


class Answer:
    """The parsed XML body of one answer about ``key``."""

    def __init__(self, key: str, body: bytes) -> None:
        self.key = key
        try:
            self.root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise integrity_failure(key, f"malformed XML ({exc})") from exc

    @classmethod
    def of(cls, key: str, response: urllib3.BaseHTTPResponse) -> Answer:
        return cls(key, response.data)

    def raise_reported_error(self, what: str) -> None:
        """Raise the error that a 200 answer may report in its body (S3 does, for some calls)."""
        if self.root.tag.endswith("Error"):
            code = self.text("Code")
            transient = code in TRANSIENT_CODES
            error = RemoteError(
                f"S3 server failed to {what}: {self.text('Message')}", code=code, transient=transient
            )
            raise Failure(error, retry=transient, maybe_applied=transient)

    def text(self, name: str, element: ET.Element | None = None) -> str | None:
        """The text of the child ``name`` of ``element`` (the root by default), or None."""
        parent = self.root if element is None else element
        found = parent.find(f"{_NS}{name}")
        if found is None:
            found = parent.find(name)
        return None if found is None else (found.text or "")

    def required(self, name: str, element: ET.Element | None = None) -> str:
        value = self.text(name, element)
        if value is None:
            raise integrity_failure(self.key, f"the answer has no {name}")
        return value

    def parsed(self, name: str, parse: Callable[[str], T], element: ET.Element | None = None) -> T:
        """The child ``name`` read by ``parse``; a value that does not parse is a failure."""
        value = self.required(name, element)
        try:
            return parse(value)
        except (ValueError, OverflowError) as exc:
            raise integrity_failure(self.key, f"the answer's {name} {value!r} is invalid") from exc

    def flag(self, name: str) -> bool:
        value = self.required(name)
        if value not in ("true", "false"):
            raise integrity_failure(self.key, f"the answer's {name} is {value!r}, not true or false")
        return value == "true"

    def all(self, name: str) -> list[ET.Element]:
        return self.root.findall(f"{_NS}{name}") or self.root.findall(name)


def etag(value: str) -> str:
    return value.strip().strip('"')


def iso_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
_IMF_FIXDATE = re.compile(
    r"[A-Z][a-z]{2}, ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)


def http_time(value: str) -> datetime:
    """An HTTP date (UTC); the usual form (``Mon, 30 Nov 2026 04:20:15 GMT``) without ``email``."""
    found = _IMF_FIXDATE.fullmatch(value)
    month = _MONTHS.get(found.group(2)) if found else None
    if found and month:
        day, _, year, hour, minute, second = found.groups()
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    parsed = parsedate_to_datetime(value)
    if parsed is None:
        raise ValueError(value)
    return parsed.astimezone(UTC)


def header(key: str, response: urllib3.BaseHTTPResponse, name: str) -> str:
    """A header the answer must have."""
    value = response.headers.get(name)
    if value is None:
        raise integrity_failure(key, f"the answer has no {name} header")
    return str(value)


def parsed_header(key: str, response: urllib3.BaseHTTPResponse, name: str, parse: Callable[[str], T]) -> T:
    value = header(key, response, name)
    try:
        return parse(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise integrity_failure(key, f"the answer's {name} header {value!r} is invalid") from exc
