"""An object's body as a stream that resumes where a broken read stopped, and never passes bad bytes for good.

Every body is checked against its length, and its bytes against a digest where the
answer gives one: the etag of a single-part object (the MD5 of its content, unless KMS or
customer keys encrypt it); the etag of a multipart object that objstore wrote (the MD5 of
its parts' MD5s, with the part size recorded in its metadata); else a full-object
``x-amz-checksum-crc32``, ``-sha1`` or ``-sha256`` that the writer had the server keep.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import urllib3
from minio.error import S3Error

from .._ranges import seek_target
from ..errors import ObjectChangedError, RemoteError
from .answers import etag, header, parsed_header
from .deadline import deadline, watch
from .failures import RAW_ERRORS, Failure, classify, integrity_failure

if TYPE_CHECKING:
    from .storage import S3Storage

#: The metadata header in which objstore records a multipart object's part size.
PART_SIZE_HEADER = "x-amz-meta-objstore-part-size"
#: Asks the server for the checksums it keeps of an object.
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}
#: At most this much of a body is read under one deadline.
CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")
_MULTIPART = re.compile(r"([0-9a-f]{32})-([1-9][0-9]{0,4})")


class _Digest(Protocol):
    def update(self, data: memoryview) -> None: ...

    def result(self) -> str:
        """The digest, written as the answer writes the expected one."""


class _WholeMD5:
    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)

    def update(self, data: memoryview) -> None:
        self._md5.update(data)

    def result(self) -> str:
        return self._md5.hexdigest()


class _PartsMD5:
    """The etag of a multipart upload: the MD5 of its parts' MD5s, and their number."""

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, data: memoryview) -> None:
        while data:
            room = self._part_size - self._in_part
            self._md5.update(data[:room])
            self._in_part += min(room, len(data))
            data = data[room:]
            if self._in_part == self._part_size:
                self._end_part()

    def _end_part(self) -> None:
        self._digests.append(self._md5.digest())
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._in_part = 0

    def result(self) -> str:
        if self._in_part:
            self._end_part()
        whole = hashlib.md5(b"".join(self._digests), usedforsecurity=False).hexdigest()
        return f"{whole}-{len(self._digests)}"


class _CRC32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: memoryview) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class _Checksum:
    """A full-object checksum as S3 writes it: the base64 of the digest."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._hash = make()

    def update(self, data: memoryview) -> None:
        self._hash.update(data)

    def result(self) -> str:
        return base64.b64encode(self._hash.digest()).decode()


_CHECKSUMS: dict[str, Callable[[], Any]] = {
    "x-amz-checksum-crc32": _CRC32,
    "x-amz-checksum-sha1": hashlib.sha1,
    "x-amz-checksum-sha256": hashlib.sha256,
}


class BodyCheck:
    """What the bytes of one object must add up to: its length, and a digest where one is given."""

    def __init__(
        self, key: str, size: int, etag: str, digest: _Digest | None = None, expected: str = ""
    ) -> None:
        self.key = key
        self.size = size
        self.etag = etag
        self._digest = digest
        self._expected = expected

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
        if not encrypted and _MD5.fullmatch(tag):
            return cls(key, size, tag, _WholeMD5(), tag)
        multipart = _MULTIPART.fullmatch(tag)
        part_size = _part_size(headers.get(PART_SIZE_HEADER))
        if not encrypted and multipart and part_size:
            parts = int(multipart.group(2))
            if not (parts - 1) * part_size < size <= parts * part_size:
                raise integrity_failure(key, f"{size} bytes cannot be {parts} parts of {part_size} bytes")
            return cls(key, size, tag, _PartsMD5(part_size), tag)
        full_object = (
            headers.get("x-amz-checksum-type", "FULL_OBJECT" if not multipart else "") == "FULL_OBJECT"
        )
        for name, make in _CHECKSUMS.items():
            value = headers.get(name)
            if full_object and value and "-" not in value:
                return cls(key, size, tag, _Checksum(make), value)
        return cls(key, size, tag)  # its length only

    @property
    def has_digest(self) -> bool:
        """Whether the body is checked by more than its length."""
        return self._digest is not None

    def update(self, data: memoryview) -> None:
        if self._digest is not None:
            self._digest.update(data)

    def verify(self) -> None:
        """Raise a :class:`Failure` unless the whole body, now read, matches its digest."""
        if self._digest is None:
            return
        got = self._digest.result()
        if got != self._expected:
            raise integrity_failure(self.key, f"the body's digest is {got}, the answer says {self._expected}")


def _natural(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _part_size(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else None


#: A seek at most this far ahead within the current answer reads forward instead of asking again.
READ_FORWARD = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")


class ObjectReader(io.RawIOBase):
    """The bytes ``[start, end)`` of one version of an object (pinned by its etag), read in
    checked chunks; seekable, position 0 being ``start``.

    Every answer is checked against its length (a ranged one against its
    ``Content-Range``). The whole-object digest is checked only on a read of the whole
    object, from 0 to its end without a seek that moves. A seek issues a ranged GET of the
    same version from the new position when it reads next (or, up to :data:`READ_FORWARD`
    ahead within the current answer, reads forward); an object replaced meanwhile raises
    ``ObjectChangedError``.
    """

    def __init__(
        self,
        storage: S3Storage,
        key: str,
        response: urllib3.BaseHTTPResponse | None,
        *,
        start: int,
        end: int,
        size: int,
        etag: str,
        check: BodyCheck | None = None,
    ) -> None:
        self._storage = storage
        self._key = key
        self._response = response
        self._start = start
        self._end = end
        self._size = size
        self._etag = etag
        self._check = check  # the digest, while the read is of the whole object
        self._offset = start  # absolute: the next byte to return
        self._response_at = start  # absolute: the next byte of the answer
        self._response_end = size if response is not None and response.status == 200 else end
        self._budget = storage.retries
        self._verified = False

    @property
    def etag(self) -> str:
        """The etag of the version read ("" if the range is empty and no answer named it)."""
        return self._etag

    @property
    def size(self) -> int:
        """The size of the whole object (of the range's start if the range is past its end)."""
        return self._size

    @property
    def end(self) -> int:
        """Where the range ends in the object (cut to it)."""
        return self._end

    @classmethod
    def open(
        cls,
        storage: S3Storage,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
    ) -> ObjectReader:
        """Open ``[start, end)`` (cut to the object); ``if_match`` pins the version
        (``ObjectChangedError`` if it is gone)."""
        if end is not None and end <= start:
            info = storage._stat(key)
            if if_match is not None and info.etag != if_match:
                raise ObjectChangedError(key, if_match)
            low = min(start, info.size)
            return cls(storage, key, None, start=low, end=low, size=info.size, etag=info.etag)

        def get() -> ObjectReader:
            whole = start == 0 and end is None
            headers = (
                dict(CHECKSUM_MODE) if whole else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
            )
            if if_match is not None:
                headers["If-Match"] = f'"{if_match}"'
            try:
                response = storage._request("GET", key, headers=headers, stream=True)
            except S3Error as exc:
                if exc.response is None or exc.response.status != 416:
                    raise
                return cls(storage, key, None, start=start, end=start, size=start, etag=if_match or "")
            try:
                return cls.of_answer(storage, key, response, start, end)
            except Failure:
                drop(response)
                raise

        try:
            return storage._retrying(key, get)
        except RemoteError as exc:
            if if_match is not None and exc.status == 412:
                raise ObjectChangedError(key, if_match) from exc
            raise

    @classmethod
    def of_answer(
        cls, storage: S3Storage, key: str, response: urllib3.BaseHTTPResponse, start: int, end: int | None
    ) -> ObjectReader:
        """The reader of the first answer: a whole body (200) or a range of it (206)."""
        if response.status == 200 and start == 0:  # asked for all of it, or the server ignored the range
            check = BodyCheck.of(key, response)
            last = check.size if end is None else min(end, check.size)
            digest = check if last == check.size and end is None else None
            return cls(
                storage, key, response, start=0, end=last, size=check.size, etag=check.etag, check=digest
            )
        found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range") or "")
        if response.status != 206 or found is None:
            raise integrity_failure(
                key,
                f"a ranged read got status {response.status} "
                f"and range {response.headers.get('Content-Range')!r}",
            )
        first, last, size = (int(part) for part in found.groups())
        expected_last = (size if end is None else min(end, size)) - 1
        length = parsed_header(key, response, "Content-Length", _natural)
        if first != start or last != expected_last or length != last - first + 1:
            raise integrity_failure(
                key,
                f"a ranged read of bytes {start}-{expected_last} got {found.group(0)!r} with {length} bytes",
            )
        tag = etag(header(key, response, "ETag"))
        return cls(storage, key, response, start=start, end=last + 1, size=size, etag=tag)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._offset - self._start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = seek_target(offset, whence, self.tell(), self._end - self._start)
        if self._start + target != self._offset:
            self._check = None  # no longer one read of the whole body
            self._offset = self._start + target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._next_chunk(len(view))
        view[: len(chunk)] = chunk
        self._advance(chunk)
        return len(chunk)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self._next_chunk(self._end - self._offset, whole=True):
            chunks.append(chunk)
            self._advance(chunk)
        self._advance(b"")  # an empty body is checked too
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _advance(self, chunk: bytes) -> None:
        """Count ``chunk`` read; at the end of a whole body, check its digest."""
        self._offset += len(chunk)
        if self._check is None:
            return
        if chunk:
            self._check.update(memoryview(chunk))
        if self._offset == self._size and not self._verified:
            try:
                self._check.verify()
            except Failure as failure:
                raise failure.error from failure
            self._verified = True

    def _next_chunk(self, limit: int, *, whole: bool = False) -> bytes:
        """The next bytes of the range, at most ``limit`` and, unless ``whole``, :data:`CHUNK`;
        b"" at its end."""
        while self._offset < self._end and limit > 0:
            count = min(limit, self._end - self._offset)
            try:
                self._reach()
                return self._read_some(count if whole else min(count, CHUNK))
            except Failure as failure:
                self._resume(failure)
        return b""

    def _reach(self) -> None:
        """Make the current answer's next byte the one at the position: read forward, or ask again."""
        gap = self._offset - self._response_at
        if self._response is not None and gap and not 0 < gap <= READ_FORWARD:
            drop(self._response)
            self._response = None
        if self._response is None:
            try:
                self._response = self._storage._attempt(self._key, self._ranged_get)
            except Failure as failure:
                if failure.refused:
                    raise ObjectChangedError(self._key, self._etag) from failure
                raise
            self._response_at, self._response_end = self._offset, self._end
        while self._response_at < self._offset:
            self._read_some(min(self._offset - self._response_at, CHUNK))

    def _read_some(self, count: int) -> bytes:
        """Up to ``count`` bytes of the answer, within the timeout for each :data:`CHUNK` of them."""
        storage = self._storage
        assert self._response is not None
        with deadline(storage.timeout * -(-count // CHUNK)) as alarm:
            watch(self._response, alarm)
            try:
                chunk = self._response.read(count)
            except RAW_ERRORS as exc:
                raise classify(
                    self._key, storage.bucket, exc, timed_out=alarm.fired, timeout=storage.timeout
                ) from exc
        if not chunk:
            raise integrity_failure(self._key, f"the body ended at byte {self._response_at} of {self._end}")
        self._response_at += len(chunk)
        return chunk

    def _resume(self, failure: Failure) -> None:
        """After a failed answer: drop it, so the next read continues with a ranged GET (or raise)."""
        if self._response is not None:
            drop(self._response)
            self._response = None
        if not failure.retry or self._budget <= 0:
            raise failure.error from failure
        self._storage._pause(self._storage.retries - self._budget)
        self._budget -= 1

    def _ranged_get(self) -> urllib3.BaseHTTPResponse:
        last = self._end - 1
        headers = {"Range": f"bytes={self._offset}-{last}", "If-Match": f'"{self._etag}"'}
        response = self._storage._request("GET", self._key, headers=headers, stream=True)
        expected = f"bytes {self._offset}-{last}/{self._size}"
        if response.status != 206 or response.headers.get("Content-Range") != expected:
            drop(response)
            raise integrity_failure(
                self._key,
                f"a ranged read got status {response.status} and range "
                f"{response.headers.get('Content-Range')!r}, not {expected!r}",
            )
        return response

    def close(self) -> None:
        if not self.closed and self._response is not None:
            if self._response_at == self._response_end:
                if not self._response.closed:  # http.client closes it at the end of the body
                    self._response.drain_conn()  # lets http.client see the end of the body
                self._response.release_conn()  # the connection can serve again
            else:
                drop(self._response)
        super().close()


def drop(response: urllib3.BaseHTTPResponse) -> None:
    """Close the response and its connection (unread bytes make it unusable)."""
    response.close()
    response.release_conn()
