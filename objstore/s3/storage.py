"""The S3 backend: any S3-compatible server, through the ``minio`` client.

Requests go through minio's request layer (signing, regions, connection pool) with the
headers that the public minio calls cannot send: ``If-None-Match`` and ``If-Match`` on PUT
and on CompleteMultipartUpload. Failures are retried here with exponential backoff and
jitter; urllib3 itself never retries.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import io
import ipaddress
import logging
import math
import os
import random
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeGuard, TypeVar, cast
from urllib.parse import quote, unquote_plus, urlsplit

import attrs
import urllib3
from minio import Minio

from ..attributes import DEFAULT_ATTRIBUTES, Attributes
from ..errors import (
    AlreadyExistsError,
    IntegrityError,
    InvalidArgumentError,
    InvalidKeyError,
    NotExistError,
    ObjectChangedError,
    ObjstoreError,
    OutcomeUnknownError,
    PreconditionFailedError,
    RemoteError,
)
from ..info import CleanupResult, CommonPrefix, ObjectInfo
from ..keys import check_key
from ..storage import Chunks, Storage
from . import parallel
from .answers import Answer, etag, header, http_time, iso_time, parsed_header
from .body import CHUNK, PART_SIZE_HEADER, ObjectReader
from .deadline import deadline, pool_manager
from .failures import RAW_ERRORS, TRANSIENT_CODES, Failure, classify
from .metadata import request_headers, response_attributes
from .ranges import read_ranges
from .request import Requests

T = TypeVar("T")
log = logging.getLogger("objstore")

MIN_PART_SIZE = 5 << 20
DEFAULT_PART_SIZE = 16 << 20
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_UPLOAD_GRACE = 24 * 3600.0
MIN_EXPIRY, MAX_EXPIRY = timedelta(seconds=1), timedelta(days=7)
#: The metadata header that carries the identifier of a conditional write.
WRITE_ID_HEADER = "x-amz-meta-objstore-write"
_DELETE_BATCH = 1000


@attrs.frozen
class _Condition:
    """What a conditional write requires of the current object, and the write's own identifier."""

    if_none_match: bool
    if_match: str | None
    write_id: str = attrs.field(factory=lambda: secrets.token_hex(16))

    def headers(self) -> dict[str, str]:
        if self.if_none_match:
            return {"If-None-Match": "*"}
        return {"If-Match": f'"{self.if_match}"'}

    def refusal(self, key: str, failure: Failure) -> ObjstoreError:
        """The error for the server's refusal (a 412, or a 404 for a missing object)."""
        if failure.status != 412:
            return failure.error
        if self.if_none_match:
            return AlreadyExistsError(key)
        return PreconditionFailedError(key, str(self.if_match))

    def holds(self, current: ObjectInfo | None) -> bool:
        if self.if_none_match:
            return current is None
        return current is not None and current.etag == self.if_match


class S3Storage(Storage):
    """Objects in one bucket of an S3-compatible server (``endpoint``: ``host[:port]`` or a URL).

    ``timeout`` bounds each request, from sending it to the last byte of its answer (a
    streamed read: each chunk of at most 1 MiB); ``retries`` is how many times a failed
    request is tried again, ``backoff`` the first pause between tries, in seconds.
    A multipart write keeps up to ``max_concurrency`` parts in flight, so it holds about
    ``(max_concurrency + 1) * part_size`` bytes; ``read_bytes`` and ``download`` read
    ranges of ``part_size`` bytes, up to ``max_concurrency`` at once, of one version.

    A store pickles as its settings, credentials included; each process makes its own
    client and connections.
    """

    lists_metadata = False  # S3's listing answers do not carry them

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        secure: bool | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retries: int = 5,
        backoff: float = 0.1,
        timeout: float = 60.0,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        """Check the settings (``InvalidArgumentError`` names a bad one); nothing connects yet.

        ``endpoint`` is ``host[:port]``, or ``http://host[:port]`` or ``https://...``,
        whose scheme decides ``secure`` (True by default for ``host[:port]``).
        """
        endpoint, secure = _endpoint_and_secure(endpoint, secure)
        _check_settings(bucket, access_key, secret_key, session_token, region)
        _check_tuning(part_size, retries, backoff, timeout, max_concurrency)
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._settings: dict[str, Any] = dict(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=secure,
            region=region,
        )
        self._client_lock = threading.Lock()
        # this process's client, made now so that minio's own checks of the settings run now
        self._minio: Minio | None = self._new_client()
        self._client_pid = os.getpid()

    def __repr__(self) -> str:
        return f"S3Storage({self.endpoint!r}, {self.bucket!r})"

    #: What belongs to one process: never pickled, made anew on the other side.
    _PROCESS_LOCAL = ("_client_pid", "_client_lock", "_minio", "_requests")
    #: The lean request path of this process's client (made on the first request).
    _requests: Requests | None = None

    def __getstate__(self) -> dict[str, Any]:
        """The store's settings, credentials included; not this process's client or lock."""
        state = dict(self.__dict__)
        for name in self._PROCESS_LOCAL:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_pid = -1  # the client is made on first use, with its own connections
        self._client_lock = threading.Lock()
        self._minio = None

    def check_key(self, key: object) -> str:
        key = check_key(key)
        if any(segment in (".", "..") for segment in key.split("/")):
            # urllib3 removes such segments from a request's path, so another key would be hit
            raise InvalidKeyError(key, 'an S3 key has no "." or ".." segment (HTTP clients rewrite them)')
        return key

    @property
    def _client(self) -> Minio:
        """The minio client of this process (a forked child makes its own connections)."""
        pid = os.getpid()
        if self._client_pid != pid:
            with self._client_lock:
                if self._client_pid != pid:
                    self._minio = self._new_client()
                    self._client_pid = pid
        assert self._minio is not None
        return self._minio

    def _new_client(self) -> Minio:
        """A minio client of the settings, with a connection pool of its own."""
        try:
            # a connection for each part in flight, besides those of other threads' calls
            maxsize = max(16, 2 * self.max_concurrency)
            return Minio(**self._settings, http_client=pool_manager(self.timeout, maxsize=maxsize))
        except ValueError as exc:  # minio's checks of the endpoint and region
            raise InvalidArgumentError(
                f"S3 endpoint {self.endpoint!r} with region {self._settings['region']!r}: {exc}"
            ) from exc

    def close(self) -> None:
        if self._minio is not None and self._client_pid == os.getpid():
            self._minio._http.clear()

    # -- requests and retries ----------------------------------------------------

    def _request(
        self,
        method: str,
        key: str | None,
        *,
        body: bytes | bytearray | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        client = self._client
        requests = self._requests
        if requests is None or requests.client is not client:
            requests = self._requests = Requests(client)
        return requests.send(
            method, self.bucket, key, body=body, headers=headers, query=query, preload_content=not stream
        )

    def _attempt(self, key: str, call: Callable[[], T]) -> T:
        """Run ``call`` once within the timeout; a failure is raised as a :class:`Failure`."""
        with deadline(self.timeout) as alarm:
            try:
                return call()
            except RAW_ERRORS as exc:
                raise classify(key, self.bucket, exc, timed_out=alarm.fired, timeout=self.timeout) from exc

    def _pause(self, attempt: int) -> None:
        """Wait before try ``attempt + 2``: exponential backoff with jitter, at most 5 s."""
        time.sleep(min(self.backoff * 2**attempt, 5.0) * (0.5 + random.random()))

    def _tries(self) -> Iterator[bool]:
        """One item per try, yielded after the pause before it: whether it is the last."""
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt - 1)
            yield attempt == self.retries

    def _retrying(self, key: str, call: Callable[[], T]) -> T:
        """Run ``call`` until it succeeds, fails for good, or the retries are spent."""
        for last in self._tries():
            try:
                return self._attempt(key, call)
            except Failure as failure:
                if not failure.retry or last:
                    raise failure.error from failure.__cause__
        raise AssertionError("unreachable")

    def _write_conditionally(self, key: str, condition: _Condition, send: Callable[[], str]) -> str:
        """Run the conditional request ``send`` and return the etag it stored.

        When an attempt may have been applied although it failed, the object is read back:
        the write identifier says whether it is ours. What cannot be proven either way
        raises :class:`OutcomeUnknownError`, never a success or a refusal.
        """
        ambiguous = False
        for last in self._tries():
            try:
                return self._attempt(key, send)
            except Failure as failure:
                if failure.refused:
                    if not ambiguous:
                        raise condition.refusal(key, failure) from failure.__cause__
                    ours = self._probe(key, condition, failure)
                    if ours is None:
                        raise OutcomeUnknownError(
                            key, "an earlier try may have been applied, and a retry was refused"
                        ) from failure
                    return ours
                if not failure.retry:
                    raise failure.error from failure.__cause__
                if failure.maybe_applied:
                    ambiguous = True
                    ours = self._probe(key, condition, failure)
                    if ours is not None:
                        return ours
                    if last:  # the request may still be applied after this read-back
                        raise OutcomeUnknownError(
                            key, f"no try could be proven ({failure.error})"
                        ) from failure
                if last:
                    raise failure.error from failure.__cause__
        raise AssertionError("unreachable")

    def _probe(self, key: str, condition: _Condition, failure: Failure) -> str | None:
        """After a try that may have been applied: the stored etag if the object is ours,
        None if the condition still holds (so the try was not applied); else the outcome
        is unknown."""
        try:
            current, write_id = self._retrying(key, lambda: self._head(key))
        except NotExistError:
            current, write_id = None, None
        except ObjstoreError as exc:
            raise OutcomeUnknownError(key, f"the object could not be read back ({exc})") from exc
        if current is not None and write_id == condition.write_id:
            return current.etag
        if condition.holds(current):
            return None
        raise OutcomeUnknownError(
            key, "a try may have been applied and its answer was lost, and the object has changed since"
        ) from failure

    # -- writing ---------------------------------------------------------------

    def _write(
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> str:
        condition = _Condition(if_none_match, if_match) if if_none_match or if_match is not None else None
        headers = request_headers(attributes)
        if condition is not None:
            headers[WRITE_ID_HEADER] = condition.write_id
        parts = self._parts(chunks)
        part, last = next(parts)
        if last:
            return self._put(key, part, headers, condition)
        first = [part]
        del part  # handed over in a list it empties: this frame holds no part
        return self._write_multipart(key, first, parts, headers, condition)

    def _parts(self, chunks: Chunks) -> Iterator[tuple[bytearray, bool]]:
        """The data cut into parts of ``part_size`` bytes, each with whether it is the last."""
        part = bytearray()
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if len(part) == self.part_size:
                    yield part, False  # full, and more data follows
                    part = bytearray()
                room = self.part_size - len(part)
                part += view[:room]
                view = view[room:]
        yield part, True

    def _put(self, key: str, body: bytearray, headers: dict[str, str], condition: _Condition | None) -> str:
        headers = {**headers, "Content-MD5": _content_md5(body)}
        if condition is not None:
            headers.update(condition.headers())

        def put() -> str:
            response = self._request("PUT", key, body=body, headers=headers)
            return etag(header(key, response, "ETag"))

        if condition is None:
            return self._retrying(key, put)
        return self._write_conditionally(key, condition, put)

    def _write_multipart(
        self,
        key: str,
        first: list[bytearray],
        parts: Iterator[tuple[bytearray, bool]],
        headers: dict[str, str],
        condition: _Condition | None,
    ) -> str:
        if condition is not None:
            self._check_early(key, condition)
        create_headers = {**headers, PART_SIZE_HEADER: str(self.part_size)}

        def create() -> str:
            response = self._request("POST", key, headers=create_headers, query={"uploads": ""})
            return Answer.of(key, response).required("UploadId")

        # A create whose answer was lost leaves an upload that only cleanup() can find.
        upload_id = self._retrying(key, create)
        try:
            if self.max_concurrency == 1:
                etags = self._upload_in_turn(key, upload_id, first, parts)
            else:
                etags = self._upload_in_parallel(key, upload_id, first, parts)
            body = _complete_body(etags)
            complete_headers = condition.headers() if condition is not None else {}

            def complete() -> str:
                response = self._request(
                    "POST", key, body=body, headers=complete_headers, query={"uploadId": upload_id}
                )
                answer = Answer.of(key, response)
                answer.raise_reported_error(f"complete the upload of {key!r}")
                return etag(answer.required("ETag"))

            if condition is None:
                return self._retrying(key, complete)
            return self._write_conditionally(key, condition, complete)
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _check_early(self, key: str, condition: _Condition) -> None:
        """Refuse a conditional multipart write before its parts go up, if it would fail."""
        try:
            current: ObjectInfo | None = self._stat(key)
        except NotExistError:
            current = None
        if condition.holds(current):
            return
        if condition.if_none_match:
            raise AlreadyExistsError(key)
        if current is None:
            raise NotExistError(key)
        raise PreconditionFailedError(key, str(condition.if_match))

    def _upload_in_turn(
        self, key: str, upload_id: str, first: list[bytearray], parts: Iterator[tuple[bytearray, bool]]
    ) -> list[str]:
        """Upload the parts one at a time; their etags, in order."""
        part = first.pop()
        etags = [self._upload_part(key, upload_id, 1, part)]
        last = False
        while not last:
            del part  # hold one part at a time
            part, last = next(parts)
            etags.append(self._upload_part(key, upload_id, len(etags) + 1, part))
        return etags

    def _upload_in_parallel(
        self, key: str, upload_id: str, first: list[bytearray], parts: Iterator[tuple[bytearray, bool]]
    ) -> list[str]:
        """Upload the parts with up to ``max_concurrency`` in flight; their etags, in order.

        The next part is read from the source only while fewer are in flight. A part that
        fails for good, or a source that raises, stops the reading and the retries of the
        parts in flight, and is raised once none is left running.
        """
        stop = threading.Event()
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="objstore-s3-part")
        uploads: list[Future[str]] = []
        in_flight: set[Future[str]] = set()
        try:
            part, last = first.pop(), False
            while True:
                uploads.append(pool.submit(self._upload_part, key, upload_id, len(uploads) + 1, part, stop))
                in_flight.add(uploads[-1])
                del part  # the worker holds it until its upload ends
                if last:
                    break
                in_flight = _settle(in_flight, block=len(in_flight) >= self.max_concurrency)
                part, last = next(parts)
            _settle(in_flight, block=None)
            return [upload.result() for upload in uploads]
        except BaseException:
            stop.set()  # parts in flight end with their current try
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytearray, stop: threading.Event | None = None
    ) -> str:
        """Upload part ``number``, retried; once ``stop`` is set, no further try starts."""
        query = {"partNumber": str(number), "uploadId": upload_id}
        headers = {"Content-MD5": _content_md5(data)}

        def upload() -> str:
            if stop is not None and stop.is_set():
                raise _Stopped(f"part {number} of {key!r}: the upload is being aborted")
            response = self._request("PUT", key, body=data, headers=headers, query=query)
            return etag(header(key, response, "ETag"))

        return self._retrying(key, upload)

    def _abort(self, key: str, upload_id: str) -> bool:
        """Abort the upload; if that fails too, leave it to :meth:`cleanup`, say so, return False."""
        try:
            self._retrying(key, lambda: self._request("DELETE", key, query={"uploadId": upload_id}))
        except NotExistError:
            pass
        except ObjstoreError as exc:
            log.warning("could not abort the upload %s of %r; cleanup() removes it: %s", upload_id, key, exc)
            return False
        return True

    # -- reading ---------------------------------------------------------------

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        return self._read_version(key, start, end, None)

    def _read_version(self, key: str, start: int, end: int | None, etag: str | None) -> BinaryIO:
        reader = ObjectReader.open(self, key, start, end, if_match=etag)
        return cast(BinaryIO, io.BufferedReader(reader, buffer_size=CHUNK))

    def _read_ranges(self, key: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Near ranges merged into one GET (``objstore.s3.ranges.MERGE_GAP``), GETs concurrent."""
        return read_ranges(self, key, ranges)

    def read_bytes(self, key: str) -> bytes:
        """The whole object; a body that fails its check, or changes while read, is read again.

        With ``max_concurrency`` over 1, ranges of ``part_size`` bytes are read in parallel
        (``objstore.s3.parallel``); an object that fits in one is read by one GET.
        """
        key = self.check_key(key)
        if self.max_concurrency > 1:
            return parallel.read_bytes(self, key)
        for last in self._tries():
            reader = ObjectReader.open(self, key)
            try:
                return reader.readall()
            except (IntegrityError, ObjectChangedError):
                if last:
                    raise
            finally:
                reader.close()
        raise AssertionError("unreachable")

    def _download(self, key: str, fd: int) -> ObjectInfo:
        """With ``max_concurrency`` over 1, ranged GETs in parallel written at their offsets;
        else one streamed GET."""
        return parallel.download(self, key, fd)

    def _head(self, key: str) -> tuple[ObjectInfo, str | None]:
        """The object's info and the identifier of the conditional write that stored it."""
        response = self._request("HEAD", key)
        attributes = response_attributes(response.headers)
        info = ObjectInfo(
            key=key,
            size=parsed_header(key, response, "Content-Length", int),
            last_modified=parsed_header(key, response, "Last-Modified", http_time),
            etag=etag(header(key, response, "ETag")),
            content_type=attributes.content_type,
            metadata=attributes.metadata,
        )
        return info, response.headers.get(WRITE_ID_HEADER)

    def _stat(self, key: str) -> ObjectInfo:
        return self._retrying(key, lambda: self._head(key))[0]

    # -- deleting and copying ----------------------------------------------------

    def _delete(self, key: str) -> None:
        with contextlib.suppress(NotExistError):
            self._retrying(key, lambda: self._request("DELETE", key))

    def _delete_many(self, keys: Iterator[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        root = ET.Element("Delete")
        ET.SubElement(root, "Quiet").text = "true"
        for key in keys:
            ET.SubElement(ET.SubElement(root, "Object"), "Key").text = key
        body = ET.tostring(root, encoding="utf-8")
        headers = {"Content-Type": "application/xml", "Content-MD5": _content_md5(body)}

        def delete() -> Answer:
            response = self._request("POST", None, body=body, headers=headers, query={"delete": ""})
            return Answer.of(keys[0], response)

        answer = self._retrying(keys[0], delete)
        for error in answer.all("Error"):
            code = answer.text("Code", error)
            if code != "NoSuchKey":
                failed, message = answer.text("Key", error), answer.text("Message", error)
                raise RemoteError(
                    f"S3 server failed to delete {failed!r}: {message}",
                    code=code,
                    transient=code in TRANSIENT_CODES,
                )

    def _copy(self, src: str, dst: str) -> str:
        source = quote(f"/{self.bucket}/{src}", safe="/")

        def copy() -> str:
            response = self._request("PUT", dst, headers={"x-amz-copy-source": source})
            answer = Answer.of(src, response)
            answer.raise_reported_error(f"copy {src!r}")
            return etag(answer.required("ETag"))

        return self._retrying(src, copy)

    # -- listing ---------------------------------------------------------------

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        query = {
            "list-type": "2",
            "encoding-type": "url",
            "max-keys": "1000",
            "prefix": prefix,
            "delimiter": "" if recursive else "/",
        }
        if start_after:
            query["start-after"] = start_after
        while True:
            page = self._retrying(prefix, lambda: self._list_page(prefix, query))
            yield from page.entries
            if page.token is None:
                return
            query.pop("start-after", None)
            query["continuation-token"] = page.token

    def _list_page(self, prefix: str, query: dict[str, str]) -> _Page:
        answer = Answer.of(prefix, self._request("GET", None, query=query))
        decode: Callable[[str], str] = unquote_plus if answer.text("EncodingType") == "url" else str
        objects: list[ObjectInfo | CommonPrefix] = [
            ObjectInfo(
                key=decode(answer.required("Key", item)),
                size=answer.parsed("Size", int, item),
                last_modified=answer.parsed("LastModified", iso_time, item),
                etag=etag(answer.required("ETag", item)),
            )
            for item in answer.all("Contents")
        ]
        prefixes: list[ObjectInfo | CommonPrefix] = [
            CommonPrefix(decode(answer.required("Prefix", item))) for item in answer.all("CommonPrefixes")
        ]
        token = answer.required("NextContinuationToken") if answer.flag("IsTruncated") else None
        return _Page(list(heapq.merge(objects, prefixes, key=lambda entry: entry.key)), token or None)

    # -- presigned URLs ------------------------------------------------------------

    def presign(self, key: str, method: str = "GET", expires: timedelta = timedelta(hours=1)) -> str:
        """A URL with which any HTTP client, without credentials, can GET or PUT the object
        ``key`` for ``expires`` (one second to seven days, S3's limits)."""
        key = self.check_key(key)
        if method not in ("GET", "PUT"):
            raise InvalidArgumentError(f'a presigned URL is for method "GET" or "PUT", not {method!r}')
        if not isinstance(expires, timedelta) or not MIN_EXPIRY <= expires <= MAX_EXPIRY:
            raise InvalidArgumentError(f"expires is a timedelta from 1 s to 7 days, not {expires!r}")
        return self._retrying(key, lambda: self._client.get_presigned_url(method, self.bucket, key, expires))

    # -- cleaning up -------------------------------------------------------------

    def cleanup(self, older_than: float = DEFAULT_UPLOAD_GRACE) -> CleanupResult:
        """Abort the multipart uploads started more than ``older_than`` seconds ago.

        Writers that crashed, or whose request to start an upload lost its answer, leave
        such uploads behind; they hold storage until aborted.
        """
        if not isinstance(older_than, int | float) or not older_than >= 0:
            raise InvalidArgumentError(f"older_than is a number of seconds, at least 0, not {older_than!r}")
        limit = datetime.now(UTC) - timedelta(seconds=older_than)
        aborted = 0
        query = {"uploads": "", "encoding-type": "url"}
        while True:
            answer = self._retrying("", lambda: Answer.of("", self._request("GET", None, query=query)))
            decode: Callable[[str], str] = unquote_plus if answer.text("EncodingType") == "url" else str
            for upload in answer.all("Upload"):
                if answer.parsed("Initiated", iso_time, upload) < limit:
                    key = decode(answer.required("Key", upload))
                    aborted += self._abort(key, answer.required("UploadId", upload))
            if not answer.flag("IsTruncated"):
                return CleanupResult(uploads=aborted)
            query["key-marker"] = answer.required("NextKeyMarker")
            query["upload-id-marker"] = answer.required("NextUploadIdMarker")


class _Stopped(Exception):
    """A part upload that did not start a try: the upload it belongs to is being aborted."""


def _settle(in_flight: set[Future[str]], *, block: bool | None) -> set[Future[str]]:
    """The part uploads still running, after waiting for one to end (``block``), for all
    (None) or for none (False); the first that failed raises its error."""
    if block is None:
        done, running = wait(in_flight)
    else:
        done, running = wait(in_flight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
    for upload in done:
        upload.result()
    return running


@attrs.frozen
class _Page:
    entries: list[ObjectInfo | CommonPrefix]
    token: str | None


def _content_md5(body: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _complete_body(etags: list[str]) -> bytes:
    root = ET.Element("CompleteMultipartUpload")
    for number, part_etag in enumerate(etags, start=1):
        part = ET.SubElement(root, "Part")
        ET.SubElement(part, "PartNumber").text = str(number)
        ET.SubElement(part, "ETag").text = f'"{part_etag}"'
    return bytes(ET.tostring(root, encoding="utf-8"))


# -- checking the settings ---------------------------------------------------------

#: The endpoint forms :class:`S3Storage` takes.
ENDPOINT_FORMS = "host[:port], http://host[:port] or https://host[:port]"
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
#: What minio accepts as a region name.
REGION_NAME = re.compile(r"(?!_)(?!-)[a-z_\d-]{1,63}(?<!-)(?<!_)", re.IGNORECASE)


def parse_endpoint(endpoint: object) -> tuple[str, bool | None]:
    """``(host[:port], secure)`` of an S3 endpoint: ``secure`` comes from an ``http://`` or
    ``https://`` scheme, and is None without one.

    Anything else (a path, a query, user info, a bad host or port, another scheme) raises
    :class:`InvalidArgumentError` naming the value.
    """
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidArgumentError(f"an S3 endpoint is {ENDPOINT_FORMS}, not {endpoint!r}")
    if "@" in endpoint:  # not echoed: it may hold a password
        raise InvalidArgumentError(
            "an S3 endpoint has no user name or password; give credentials as access_key and secret_key"
        )
    scheme, has_scheme, _ = endpoint.partition("://")
    if has_scheme and scheme.lower() not in ("http", "https"):
        raise InvalidArgumentError(
            f"an S3 endpoint's scheme is http or https, not {scheme!r} (in {endpoint!r})"
        )
    try:
        url = urlsplit(endpoint if has_scheme else "//" + endpoint)
        port = url.port
    except ValueError as exc:
        raise InvalidArgumentError(f"S3 endpoint {endpoint!r} has an invalid host or port ({exc})") from exc
    if url.path not in ("", "/") or url.query or url.fragment or "?" in endpoint or "#" in endpoint:
        raise InvalidArgumentError(
            f"an S3 endpoint is {ENDPOINT_FORMS}, without a path or query, not {endpoint!r}"
        )
    if port == 0 or url.netloc.endswith(":"):
        raise InvalidArgumentError(f"S3 endpoint {endpoint!r} has an invalid port")
    if not _valid_host(url.hostname):
        raise InvalidArgumentError(f"S3 endpoint {endpoint!r} has no valid host name or address")
    return url.netloc, (scheme.lower() == "https") if has_scheme else None


def _valid_host(host: str | None) -> bool:
    if not host:
        return False
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST_NAME.fullmatch(host) is not None


def _endpoint_and_secure(endpoint: object, secure: object) -> tuple[str, bool]:
    """The endpoint as ``host[:port]``, and whether to use TLS: its scheme and ``secure`` agree."""
    netloc, scheme_secure = parse_endpoint(endpoint)
    if secure is not None and not isinstance(secure, bool):
        raise InvalidArgumentError(f"secure is True, False or None, not {secure!r}")
    if scheme_secure is None:
        return netloc, True if secure is None else secure
    if secure is not None and secure != scheme_secure:
        says, other = ("https", "http") if scheme_secure else ("http", "https")
        raise InvalidArgumentError(
            f"endpoint {endpoint!r} says {says} and secure={secure} says {other}; give one of them"
        )
    return netloc, scheme_secure


def _check_settings(
    bucket: object, access_key: object, secret_key: object, session_token: object, region: object
) -> None:
    """Raise :class:`InvalidArgumentError` for a bad bucket, credential (never echoed) or region."""
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise InvalidArgumentError(f"bucket is the name of a bucket, not {bucket!r}")
    credentials = {"access_key": access_key, "secret_key": secret_key, "session_token": session_token}
    for name, value in credentials.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidArgumentError(f"{name} is a non-empty str or None, not a {type(value).__name__}")
    if (access_key is None) != (secret_key is None):
        raise InvalidArgumentError("access_key and secret_key go together (neither is anonymous access)")
    if session_token is not None and access_key is None:
        raise InvalidArgumentError("session_token goes with access_key and secret_key")
    if region is not None and (not isinstance(region, str) or not REGION_NAME.fullmatch(region)):
        raise InvalidArgumentError(f"region is a region name such as 'us-east-1', not {region!r}")


def _check_tuning(
    part_size: object, retries: object, backoff: object, timeout: object, max_concurrency: object
) -> None:
    if not _is_int(part_size) or part_size < MIN_PART_SIZE:
        raise InvalidArgumentError(
            f"part_size is an int of at least {MIN_PART_SIZE} bytes, not {part_size!r}"
        )
    if not _is_int(retries) or retries < 0:
        raise InvalidArgumentError(f"retries is an int, 0 or more, not {retries!r}")
    if not _is_seconds(timeout) or not timeout > 0:
        raise InvalidArgumentError(f"timeout is a number of seconds over 0, not {timeout!r}")
    if not _is_seconds(backoff) or not backoff >= 0:
        raise InvalidArgumentError(f"backoff is a number of seconds, 0 or more, not {backoff!r}")
    if not _is_int(max_concurrency) or max_concurrency < 1:
        raise InvalidArgumentError(f"max_concurrency is an int, 1 or more, not {max_concurrency!r}")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_seconds(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
