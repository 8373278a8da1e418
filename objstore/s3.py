"""The S3 backend: any S3-compatible server, through the ``minio`` client.

Requests go through minio's request layer (signing, regions, connection pool) with the
headers that the public minio calls cannot send: ``If-None-Match`` and ``If-Match`` on PUT
and on CompleteMultipartUpload. Transient failures are retried here with exponential
backoff and jitter; urllib3 itself never retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import os
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import quote, unquote_plus

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from .errors import (
    AlreadyExistsError,
    InvalidKeyError,
    NotExistError,
    ObjstoreError,
    PermissionDeniedError,
    PreconditionFailedError,
    RemoteError,
)
from .info import CommonPrefix, ObjectInfo
from .keys import check_key
from .storage import Chunks, Storage

T = TypeVar("T")

MIN_PART_SIZE = 5 << 20
DEFAULT_PART_SIZE = 16 << 20
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)
_DELETE_BATCH = 1000


class S3Storage(Storage):
    """Objects in one bucket of an S3-compatible server (``endpoint`` is ``host:port``)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        secure: bool = True,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        retries: int = 5,
        backoff: float = 0.1,
        timeout: float = 60.0,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size is at least {MIN_PART_SIZE} bytes, not {part_size}")
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_size = part_size
        self.retries = retries
        self.backoff = backoff
        self._settings: dict[str, Any] = dict(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=secure,
            region=region,
        )
        self._timeout = timeout
        self._client_pid = -1
        self._client_lock = threading.Lock()
        self._minio: Minio | None = None

    def __repr__(self) -> str:
        return f"S3Storage({self.endpoint!r}, {self.bucket!r})"

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
                    http = urllib3.PoolManager(
                        timeout=urllib3.Timeout(connect=10.0, read=self._timeout),
                        maxsize=16,
                        retries=False,
                    )
                    self._minio = Minio(**self._settings, http_client=http)
                    self._client_pid = pid
        assert self._minio is not None
        return self._minio

    def close(self) -> None:
        if self._minio is not None and self._client_pid == os.getpid():
            self._minio._http.clear()

    # -- requests and errors ----------------------------------------------------

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
        return self._client._execute(
            method,
            self.bucket,
            key,
            body=body,  # type: ignore[arg-type]
            headers=dict(headers or {}),
            query_params=dict(query or {}),
            preload_content=not stream,
        )

    def _retrying(self, key: str, call: Callable[[], T], *, conditional: str | None = None) -> T:
        """Run ``call``, retrying transient failures; map failures to objstore errors.

        ``conditional`` is "create" or the expected etag for a conditional write.
        """
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                error = self._error(key, exc, conditional)
                if not (isinstance(error, RemoteError) and error.transient) or attempt == self.retries:
                    raise error from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _error(self, key: str, exc: Exception, conditional: str | None) -> ObjstoreError:
        if isinstance(exc, S3Error):
            status = exc.response.status if exc.response is not None else None
            code = exc.code
            if code in ("NoSuchKey", "NotFound"):
                return NotExistError(key)
            if code == "PreconditionFailed" or status == 412:
                return self._precondition_error(key, conditional)
            if code == "AccessDenied" or status == 403:
                return PermissionDeniedError(
                    f"access to {key!r} in bucket {self.bucket!r} denied: {exc.message}"
                )
            transient = code in _TRANSIENT_CODES or (status is not None and status >= 500)
            request_id = exc.request_id
            if not request_id and exc.response is not None:
                request_id = exc.response.headers.get("x-amz-request-id")
            return RemoteError(
                f"S3 request for {key!r} failed: {exc.message}",
                status=status,
                code=code,
                request_id=request_id,
                transient=transient,
            )
        if isinstance(exc, ServerError):
            if exc.status_code == 412:
                return self._precondition_error(key, conditional)
            return RemoteError(
                f"S3 request for {key!r} failed", status=exc.status_code, transient=exc.status_code >= 500
            )
        if isinstance(exc, InvalidResponseError):
            return RemoteError(f"S3 server gave an invalid response for {key!r}: {exc}", transient=True)
        return RemoteError(f"S3 request for {key!r} failed: {exc}", transient=True)

    @staticmethod
    def _precondition_error(key: str, conditional: str | None) -> ObjstoreError:
        if conditional == "create":
            return AlreadyExistsError(key)
        if conditional is not None:
            return PreconditionFailedError(key, conditional)
        return RemoteError(f"S3 server refused an unconditional request for {key!r}", status=412)

    # -- writing ---------------------------------------------------------------

    def _write(
        self, key: str, chunks: Chunks, *, persist: bool, if_none_match: bool, if_match: str | None
    ) -> str:
        headers = {"Content-Type": "application/octet-stream"}
        conditional: str | None = None
        if if_none_match:
            headers["If-None-Match"] = "*"
            conditional = "create"
        elif if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
            conditional = if_match
        parts = self._parts(chunks)
        part, last = next(parts)
        if last:
            return self._put(key, part, headers, conditional)
        create_headers = {"Content-Type": headers["Content-Type"]}
        response = self._retrying(
            key, lambda: self._request("POST", key, headers=create_headers, query={"uploads": ""})
        )
        upload_id = _text(ET.fromstring(response.data), "UploadId")
        etags: list[str] = []
        try:
            while True:
                self._upload_part(key, upload_id, len(etags) + 1, part, etags)
                if last:
                    break
                del part  # hold one part at a time
                part, last = next(parts)
            return self._complete(key, upload_id, etags, headers, conditional)
        except BaseException:
            # If the abort fails too, the server's lifecycle rules remove the parts.
            with contextlib.suppress(MinioException, urllib3.exceptions.HTTPError, OSError):
                self._request("DELETE", key, query={"uploadId": upload_id})
            raise

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

    def _put(self, key: str, body: bytearray, headers: dict[str, str], conditional: str | None) -> str:
        attempts = 0

        def put() -> str:
            nonlocal attempts
            attempts += 1
            response = self._request("PUT", key, body=body, headers=headers)
            return _etag(response.headers.get("ETag", ""))

        try:
            return self._retrying(key, put, conditional=conditional)
        except (AlreadyExistsError, PreconditionFailedError):
            if attempts > 1:
                # A retried conditional PUT may have been refused because its first try
                # succeeded after all: then the stored object is ours.
                ours = hashlib.md5(body, usedforsecurity=False).hexdigest()
                try:
                    if self._stat(key).etag == ours:
                        return ours
                except NotExistError:
                    pass
            raise

    def _complete(
        self, key: str, upload_id: str, etags: list[str], headers: dict[str, str], conditional: str | None
    ) -> str:
        body = _complete_body(etags)
        complete_headers = {name: value for name, value in headers.items() if name.startswith("If-")}
        response = self._retrying(
            key,
            lambda: self._request(
                "POST", key, body=body, headers=complete_headers, query={"uploadId": upload_id}
            ),
            conditional=conditional,
        )
        root = ET.fromstring(response.data)
        if root.tag.endswith("Error"):
            raise RemoteError(
                f"S3 server failed to complete the upload of {key!r}: {_text(root, 'Message')}",
                code=_text(root, "Code"),
            )
        return _etag(_text(root, "ETag"))

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytearray, etags: list[str]) -> None:
        query = {"partNumber": str(number), "uploadId": upload_id}
        response = self._retrying(key, lambda: self._request("PUT", key, body=data, query=query))
        etags.append(_etag(response.headers.get("ETag", "")))

    # -- reading ---------------------------------------------------------------

    def _read(self, key: str) -> BinaryIO:
        response = self._retrying(key, lambda: self._request("GET", key, stream=True))
        return cast(BinaryIO, io.BufferedReader(_ResponseReader(self, key, response), buffer_size=1 << 20))

    def _stat(self, key: str) -> ObjectInfo:
        response = self._retrying(key, lambda: self._request("HEAD", key))
        headers = response.headers
        return ObjectInfo(
            key=key,
            size=int(headers.get("Content-Length", "0")),
            last_modified=_http_time(headers.get("Last-Modified", "")),
            etag=_etag(headers.get("ETag", "")),
        )

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
        headers = {
            "Content-Type": "application/xml",
            "Content-MD5": _content_md5(body),
        }
        response = self._retrying(
            keys[0], lambda: self._request("POST", None, body=body, headers=headers, query={"delete": ""})
        )
        for error in ET.fromstring(response.data).iter(f"{_NS}Error"):
            key = _text(error, "Key")
            code = _text(error, "Code")
            if code != "NoSuchKey":
                raise RemoteError(
                    f"S3 server failed to delete {key!r}: {_text(error, 'Message')}",
                    code=code,
                    transient=code in _TRANSIENT_CODES,
                )

    def _copy(self, src: str, dst: str) -> str:
        source = quote(f"/{self.bucket}/{src}", safe="/")
        response = self._retrying(
            src, lambda: self._request("PUT", dst, headers={"x-amz-copy-source": source})
        )
        root = ET.fromstring(response.data)
        if root.tag.endswith("Error"):
            raise RemoteError(
                f"S3 server failed to copy {src!r}: {_text(root, 'Message')}", code=_text(root, "Code")
            )
        return _etag(_text(root, "ETag"))

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
            response = self._retrying(prefix, lambda: self._request("GET", None, query=query))
            root = ET.fromstring(response.data)
            decode = unquote_plus if _text(root, "EncodingType") == "url" else str
            objects: Iterator[ObjectInfo | CommonPrefix] = (
                ObjectInfo(
                    key=decode(_text(item, "Key")),
                    size=int(_text(item, "Size")),
                    last_modified=datetime.fromisoformat(_text(item, "LastModified").replace("Z", "+00:00")),
                    etag=_etag(_text(item, "ETag")),
                )
                for item in root.iter(f"{_NS}Contents")
            )
            prefixes: Iterator[ObjectInfo | CommonPrefix] = (
                CommonPrefix(decode(_text(item, "Prefix"))) for item in root.iter(f"{_NS}CommonPrefixes")
            )
            yield from heapq.merge(objects, prefixes, key=lambda entry: entry.key)
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return
            query.pop("start-after", None)
            query["continuation-token"] = token


class _ResponseReader(io.RawIOBase):
    """An object's body as a raw stream; a broken connection raises ``RemoteError``."""

    def __init__(self, storage: S3Storage, key: str, response: urllib3.BaseHTTPResponse) -> None:
        self._storage = storage
        self._key = key
        self._response = response

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return self._response.readinto(buffer)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._storage._error(self._key, exc, None) from exc

    def readall(self) -> bytes:
        try:
            return self._response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._storage._error(self._key, exc, None) from exc

    def close(self) -> None:
        if not self.closed:
            self._response.release_conn()
            self._response.close()
        super().close()


def _text(element: ET.Element, name: str) -> str:
    return element.findtext(f"{_NS}{name}") or element.findtext(name) or ""


def _etag(value: str) -> str:
    return value.strip().strip('"')


def _http_time(value: str) -> datetime:
    from email.utils import parsedate_to_datetime

    if not value:
        return datetime.now(timezone.utc)
    return parsedate_to_datetime(value).astimezone(timezone.utc)


def _content_md5(body: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


def _complete_body(etags: list[str]) -> bytes:
    root = ET.Element("CompleteMultipartUpload")
    for number, etag in enumerate(etags, start=1):
        part = ET.SubElement(root, "Part")
        ET.SubElement(part, "PartNumber").text = str(number)
        ET.SubElement(part, "ETag").text = f'"{etag}"'
    return bytes(ET.tostring(root, encoding="utf-8"))
