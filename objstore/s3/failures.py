"""What a failed S3 request means: the objstore error, whether to retry, whether it may have been applied."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import urllib3
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from ..errors import (
    IntegrityError,
    NotExistError,
    ObjstoreError,
    PermissionDeniedError,
    RemoteError,
)

#: What an attempt may raise, besides :class:`Failure`.
RAW_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError, ET.ParseError, UnicodeDecodeError)

TRANSIENT_CODES = frozenset(
    {
        "ConditionalRequestConflict",
        "InternalError",
        "RequestTimeTooSkewed",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
    }
)
#: Answers given before the server acted on the request.
_REFUSED_UNAPPLIED = TRANSIENT_CODES - {"InternalError"}


class Failure(Exception):
    """One failed attempt of a request.

    ``refused`` is a 412 (a condition did not hold) or a 404; ``maybe_applied`` says the
    server may have carried the request out although the attempt failed.
    """

    def __init__(
        self, error: ObjstoreError, *, retry: bool, maybe_applied: bool, status: int | None = None
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.maybe_applied = maybe_applied
        self.status = status

    @property
    def refused(self) -> bool:
        return self.status in (404, 412)


def integrity_failure(key: str, detail: str) -> Failure:
    """An answer that was cut short, malformed or failed its checksum: retried, maybe applied."""
    return Failure(IntegrityError(key, detail), retry=True, maybe_applied=True)


def classify(key: str, bucket: str, exc: BaseException, *, timed_out: bool, timeout: float) -> Failure:
    """The failure that ``exc``, raised by an attempt on ``key``, stands for."""
    if timed_out:
        error = RemoteError(
            f"S3 request for {key!r} took longer than its timeout ({timeout} s)", transient=True
        )
        return Failure(error, retry=True, maybe_applied=True)
    if isinstance(exc, S3Error):
        return _s3_error(key, bucket, exc)
    if isinstance(exc, ServerError):
        status = exc.status_code
        transient = status >= 500
        error = RemoteError(f"S3 request for {key!r} failed", status=status, transient=transient)
        return Failure(error, retry=transient, maybe_applied=transient and status != 503, status=status)
    if isinstance(exc, InvalidResponseError):
        error = RemoteError(f"S3 server gave an invalid response for {key!r}: {exc}", transient=True)
        return Failure(error, retry=True, maybe_applied=True)
    if isinstance(exc, ET.ParseError | UnicodeDecodeError):
        return integrity_failure(key, f"malformed answer ({exc})")
    # The request never left if no connection was made.
    unsent = isinstance(exc, urllib3.exceptions.ConnectTimeoutError | ConnectionRefusedError)
    error = RemoteError(f"S3 request for {key!r} failed: {exc}", transient=True)
    return Failure(error, retry=True, maybe_applied=not unsent)


def _s3_error(key: str, bucket: str, exc: S3Error) -> Failure:
    status = exc.response.status if exc.response is not None else None
    code = exc.code
    if code in ("NoSuchKey", "NotFound") or (status == 404 and code == "NoSuchUpload"):
        return Failure(NotExistError(key), retry=False, maybe_applied=False, status=404)
    if code == "PreconditionFailed" or status == 412:
        error = RemoteError(f"S3 server refused a condition on {key!r}", status=412, code=code)
        return Failure(error, retry=False, maybe_applied=False, status=412)
    if code == "AccessDenied" or status == 403:
        denied = PermissionDeniedError(f"access to {key!r} in bucket {bucket!r} denied: {exc.message}")
        return Failure(denied, retry=False, maybe_applied=False, status=status)
    request_id = exc.request_id
    if not request_id and exc.response is not None:
        request_id = exc.response.headers.get("x-amz-request-id")
    if code == "NoSuchBucket":
        missing = RemoteError(
            f"S3 bucket {bucket!r} does not exist (in a request for {key!r})",
            status=status,
            code=code,
            request_id=request_id,
            transient=False,
        )
        return Failure(missing, retry=False, maybe_applied=False, status=status)
    transient = code in TRANSIENT_CODES or (status is not None and status >= 500)
    error = RemoteError(
        f"S3 request for {key!r} failed: {exc.message}",
        status=status,
        code=code,
        request_id=request_id,
        transient=transient,
    )
    return Failure(error, retry=transient, maybe_applied=transient and code not in _REFUSED_UNAPPLIED)
