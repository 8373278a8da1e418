"""An object's body as a stream that resumes where a broken read stopped, and never passes bad bytes for good.

Every body is checked against its length. A single-part object's body is also checked
against its etag (the MD5 of the content, unless KMS or customer keys encrypt it), and a
multipart object that objstore wrote against its etag too: the MD5 of its parts' MD5s,
with the part size that objstore records in the object's metadata.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import TYPE_CHECKING, Any

import urllib3

from ..errors import ObjectChangedError
from .answers import etag, header, parsed_header
from .deadline import deadline, watch
from .failures import RAW_ERRORS, Failure, classify, integrity_failure

if TYPE_CHECKING:
    from .storage import S3Storage

#: The metadata header in which objstore records a multipart object's part size.
PART_SIZE_HEADER = "x-amz-meta-objstore-part-size"
#: At most this much of a body is read under one deadline.
CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")


class BodyCheck:
    """What the bytes of one object must add up to: its length, and its etag where it can be checked."""

    def __init__(self, key: str, size: int, etag: str, part_size: int | None, digest: bool) -> None:
        self.key = key
        self.size = size
        self.etag = etag
        self._part_size = part_size  # None: the whole body is one part
        self._digest = digest
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._part_digests: list[bytes] = []
        self._in_part = 0

    @classmethod
    def of(cls, key: str, response: urllib3.BaseHTTPResponse) -> BodyCheck:
        """The check for the body that a whole-object GET answered."""
        size = parsed_header(key, response, "Content-Length", _natural)
        tag = etag(header(key, response, "ETag"))
        headers = response.headers
        encrypted = (
            headers.get("x-amz-server-side-encryption", "AES256") != "AES256"
            or "x-amz-server-side-encryption-customer-algorithm" in headers
        )
        if encrypted:
            return cls(key, size, tag, None, digest=False)
        if _MD5.fullmatch(tag):
            return cls(key, size, tag, None, digest=True)
        multipart = _MULTIPART.fullmatch(tag)
        part_size = _part_size(headers.get(PART_SIZE_HEADER))
        if not (multipart and part_size):
            return cls(key, size, tag, None, digest=False)  # written by another client: its length only
        parts = int(multipart.group(2))
        if not (parts - 1) * part_size < size <= parts * part_size:
            raise integrity_failure(key, f"{size} bytes cannot be {parts} parts of {part_size} bytes")
        return cls(key, size, tag, part_size, digest=True)

    def update(self, data: memoryview) -> None:
        if not self._digest:
            return
        if self._part_size is None:
            self._md5.update(data)
            return
        while data:
            room = self._part_size - self._in_part
            self._md5.update(data[:room])
            self._in_part += min(room, len(data))
            data = data[room:]
            if self._in_part == self._part_size:
                self._end_part()

    def _end_part(self) -> None:
        self._part_digests.append(self._md5.digest())
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._in_part = 0

    def verify(self) -> None:
        """Raise a :class:`Failure` unless the whole body, now read, matches the etag."""
        if not self._digest:
            return
        if self._part_size is None:
            got = self._md5.hexdigest()
        else:
            if self._in_part:
                self._end_part()
            whole = hashlib.md5(b"".join(self._part_digests), usedforsecurity=False).hexdigest()
            got = f"{whole}-{len(self._part_digests)}"
        if got != self.etag:
            raise integrity_failure(self.key, f"the body's checksum is {got}, its etag {self.etag}")


def _natural(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _part_size(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else None


class ObjectReader(io.RawIOBase):
    """The body of one version of an object (pinned by its etag), read in checked chunks."""

    def __init__(self, storage: S3Storage, key: str, response: urllib3.BaseHTTPResponse) -> None:
        self._storage = storage
        self._key = key
        self._response = response
        self._check = BodyCheck.of(key, response)
        self._position = 0
        self._budget = storage.retries
        self._verified = False

    @classmethod
    def open(cls, storage: S3Storage, key: str) -> ObjectReader:
        def get() -> ObjectReader:
            response = storage._request("GET", key, stream=True)
            try:
                return cls(storage, key, response)
            except Failure:
                _drop(response)
                raise

        return storage._retrying(key, get)

    @property
    def size(self) -> int:
        return self._check.size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._next_chunk(len(view))
        view[: len(chunk)] = chunk
        self._check.update(memoryview(chunk))
        self._advance(len(chunk))
        return len(chunk)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self._next_chunk(self._check.size - self._position, whole=True):
            chunks.append(chunk)
            self._check.update(memoryview(chunk))
            self._position += len(chunk)
        self._advance(0)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _advance(self, count: int) -> None:
        """Count ``count`` more bytes read; at the end, check the whole body."""
        self._position += count
        if self._position == self._check.size and not self._verified:
            try:
                self._check.verify()
            except Failure as failure:
                raise failure.error from failure
            self._verified = True

    def _next_chunk(self, limit: int, *, whole: bool = False) -> bytes:
        """The next bytes of the body, at most ``limit`` and, unless ``whole``, :data:`CHUNK`;
        b"" at its end."""
        while self._position < self._check.size and limit > 0:
            count = min(limit, self._check.size - self._position)
            try:
                return self._read_some(count if whole else min(count, CHUNK))
            except Failure as failure:
                self._resume(failure)
        return b""

    def _read_some(self, count: int) -> bytes:
        """Up to ``count`` bytes, within the timeout for each :data:`CHUNK` of them."""
        storage = self._storage
        with deadline(storage.timeout * -(-count // CHUNK)) as alarm:
            watch(self._response, alarm)
            try:
                chunk = self._response.read(count)
            except RAW_ERRORS as exc:
                raise classify(
                    self._key, storage.bucket, exc, timed_out=alarm.fired, timeout=storage.timeout
                ) from exc
        if not chunk:
            raise integrity_failure(
                self._key, f"the body ended after {self._position} of {self._check.size} bytes"
            )
        return chunk

    def _resume(self, failure: Failure) -> None:
        """Continue from the current position with a ranged GET of the same version."""
        _drop(self._response)
        while True:
            if not failure.retry or self._budget <= 0:
                raise failure.error from failure
            self._storage._pause(self._storage.retries - self._budget)
            self._budget -= 1
            try:
                self._response = self._storage._attempt(self._key, self._ranged_get)
                return
            except Failure as again:
                if again.refused:
                    raise ObjectChangedError(self._key, self._check.etag) from again
                failure = again

    def _ranged_get(self) -> urllib3.BaseHTTPResponse:
        size = self._check.size
        headers = {"Range": f"bytes={self._position}-", "If-Match": f'"{self._check.etag}"'}
        response = self._storage._request("GET", self._key, headers=headers, stream=True)
        expected = f"bytes {self._position}-{size - 1}/{size}"
        if response.status != 206 or response.headers.get("Content-Range") != expected:
            _drop(response)
            raise integrity_failure(
                self._key,
                f"a resumed read got status {response.status} and range "
                f"{response.headers.get('Content-Range')!r}, not {expected!r}",
            )
        return response

    def close(self) -> None:
        if not self.closed:
            if self._position == self._check.size:
                self._response.drain_conn()  # lets http.client see the end of the body
                self._response.release_conn()  # the connection can serve again
            else:
                _drop(self._response)
        super().close()


def _drop(response: urllib3.BaseHTTPResponse) -> None:
    """Close the response and its connection (unread bytes make it unusable)."""
    response.close()
    response.release_conn()
