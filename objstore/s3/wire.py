"""The head of an HTTP answer, read without the ``email`` package.

``http.client`` parses every answer's header lines with ``email.parser``: about 150
Python calls for the 15 headers of an S3 GET, a large part of the client's CPU time for a
small object. :class:`Response` reads header lines of the plain form ``Name: value``
directly into the same ``HTTPMessage`` (values as ``email``'s compat32 policy gives
them); a head with any other line (a continuation, a line without a name) is parsed by
``email`` as before, so its defects are found as before. What it relies on of
``http.client`` (Python 3.10 to 3.13): ``HTTPResponse.begin``'s steps, copied below,
and ``_read_status``, ``_read_headers`` and ``_check_close``.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any

_PLAIN = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*\r?\n)*")


class Head(http.client.HTTPMessage):
    """Header lines read as ``Name: value``: ``get`` and ``items`` skip the compat32
    policy's per-value check, which returns such values unchanged (text decoded from
    ISO-8859-1 has no surrogates); ``get`` looks names up in an index of the lines as
    read, while they are unchanged."""

    _read: list[tuple[str, str]] | None = None
    _count = 0
    _first: dict[str, str]

    def get(self, name: str, failobj: Any = None) -> Any:
        found: list[tuple[str, str]] = self._headers  # type: ignore[attr-defined]
        if found is self._read and len(found) == self._count:
            return self._first.get(name.lower(), failobj)
        name = name.lower()
        for key, value in found:
            if key.lower() == name:
                return value
        return failobj

    def items(self) -> list[tuple[str, Any]]:
        return list(self._headers)  # type: ignore[attr-defined]


def parse_head(fp: Any) -> http.client.HTTPMessage:
    """The header lines at ``fp``, up to the blank line, as ``http.client.parse_headers`` reads them."""
    lines: list[bytes] = http.client._read_headers(fp)  # type: ignore[attr-defined]
    fields = lines[:-1] if lines and lines[-1] in (b"\r\n", b"\n", b"") else lines
    if not _PLAIN.fullmatch(b"".join(fields)):
        text = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)
    head = Head()
    found = head._headers  # type: ignore[attr-defined]
    first: dict[str, str] = {}
    for line in fields:
        name, _, value = line.decode("iso-8859-1").partition(":")
        value = value.lstrip(" \t").rstrip("\r\n")
        found.append((name, value))
        first.setdefault(name.lower(), value)
    head._read, head._count, head._first = found, len(found), first
    head.set_payload("")  # as email's parser leaves it
    return head


class Response(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` whose head is read by :func:`parse_head`."""

    def begin(self) -> None:
        """``HTTPResponse.begin`` (Python 3.11), with :func:`parse_head` for ``parse_headers``."""
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_head(self.fp)
        transfer_encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(transfer_encoding and transfer_encoding.lower() == "chunked")
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True
