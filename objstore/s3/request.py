"""Lean S3 requests: minio's credentials, regions, URLs, signer and errors, with less work per request.

``Minio._url_open`` builds the URL through several ``SplitResult`` copies and parses it
again in urllib3's ``PoolManager``; urllib3's ``urlopen`` then resolves retries,
redirects, proxies and timeouts that objstore never uses. For a 4 KiB object that is a
good part of the client's CPU time. :class:`Requests` sends the same request (the same
URL, headers and signature: minio's ``sign_v4_s3`` signs it, and
``tests/test_s3_request.py`` compares with what minio sends) with the URL of a bucket's
objects built once, and the connection of the endpoint's pool used directly (``_open``).

What it relies on: of minio 7.x (pinned in pyproject.toml), ``Minio._provider``,
``_get_region``, ``_base_url``, ``_user_agent``, ``_region_map``,
``_handle_redirect_response``, ``_http`` and the helpers ``quote`` and ``queryencode``;
of urllib3 2.x (pinned too), the pool's
``_get_conn``, ``_put_conn``, ``_validate_conn`` and ``_raise_timeout``. Answers other
than 200, 204 and 206 raise the errors ``Minio._execute`` raises.
"""

from __future__ import annotations

import errno
import hashlib
from http.client import HTTPException
from ssl import CertificateError
from ssl import SSLError as BaseSSLError
from typing import Any, cast
from urllib.parse import SplitResult

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import md5sum_hash, queryencode, quote
from minio.signer import sign_v4_s3
from minio.time import to_amz_date, utcnow
from urllib3 import exceptions as http_errors

_SUCCESS = (200, 204, 206)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Requests:
    """Signed requests of one minio client, through its connection pools."""

    def __init__(self, client: Minio) -> None:
        self.client = client
        self._http: urllib3.PoolManager = client._http
        self._https = client._base_url.is_https
        # (bucket, region) -> (scheme, netloc, the path before an object's quoted name)
        self._object_urls: dict[tuple[str, str], tuple[str, str, str]] = {}
        self._pools: dict[tuple[str, str], urllib3.HTTPConnectionPool] = {}
        # the pools' timeouts (the pool manager's), as _make_request resolves them
        timeout = self._http.connection_pool_kw.get("timeout", urllib3.Timeout.DEFAULT_TIMEOUT)
        if not isinstance(timeout, urllib3.Timeout):
            timeout = urllib3.Timeout.from_float(timeout)
        self._connect_timeout = urllib3.Timeout.resolve_default_timeout(timeout.connect_timeout)
        self._read_timeout = urllib3.Timeout.resolve_default_timeout(timeout.read_timeout)

    def send(
        self,
        method: str,
        bucket: str,
        key: str | None,
        *,
        body: bytes | bytearray | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        preload_content: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """Send the request as ``Minio._execute`` does (once more after a ``RetryHead``)."""
        region = self.client._get_region(bucket)
        for last in (False, True):
            try:
                return self._send(method, region, bucket, key, body, headers, query, preload_content)
            except S3Error as exc:
                if exc.code != "RetryHead":
                    raise
                if last:
                    code, message = self.client._handle_redirect_response(method, exc.response, bucket)
                    raise exc.copy(cast(str, code), cast(str, message)) from None
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        region: str,
        bucket: str,
        key: str | None,
        body: bytes | bytearray | None,
        headers: dict[str, str] | None,
        query: dict[str, str] | None,
        preload_content: bool,
    ) -> urllib3.BaseHTTPResponse:
        scheme, netloc, path, target, signed = self.prepare(method, region, bucket, key, body, headers, query)
        response = self._open(self._pool(scheme, netloc), method, target, body, signed, preload_content)
        if response.status in _SUCCESS:
            return response
        raise self._error(method, bucket, key, path, response, preload_content)

    def prepare(
        self,
        method: str,
        region: str,
        bucket: str,
        key: str | None,
        body: bytes | bytearray | None,
        headers: dict[str, str] | None,
        query: dict[str, str] | None,
    ) -> tuple[str, str, str, str, dict[str, str]]:
        """``(scheme, netloc, path, path and query, headers)`` of the signed request."""
        scheme, netloc, path, query_string = self._url(method, region, bucket, key, query)
        headers = dict(headers) if headers else {}
        client = self.client
        provider = client._provider
        creds = provider.retrieve() if provider is not None else None
        headers["Host"] = netloc
        headers["User-Agent"] = client._user_agent
        if body:
            headers["Content-Length"] = str(len(body))
        content_sha256 = None
        if creds is not None and not self._https:
            content_sha256 = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        else:
            if creds is not None:
                content_sha256 = "UNSIGNED-PAYLOAD"
            if "Content-MD5" not in headers:
                md5 = md5sum_hash(cast(bytes, body))
                if md5:
                    headers["Content-MD5"] = md5
        if content_sha256 is not None:
            headers["x-amz-content-sha256"] = content_sha256
        if creds is not None and creds.session_token:
            headers["X-Amz-Security-Token"] = creds.session_token
        date = utcnow()
        headers["x-amz-date"] = to_amz_date(date)
        if creds is not None:
            url = SplitResult(scheme, netloc, path, query_string, "")
            sign_v4_s3(
                method=method,
                url=url,
                region=region,
                headers=cast(Any, headers),
                credentials=creds,
                content_sha256=cast(str, content_sha256),
                date=date,
            )
        target = f"{path}?{query_string}" if query_string else path
        return scheme, netloc, path, target, headers

    def _url(
        self, method: str, region: str, bucket: str, key: str | None, query: dict[str, str] | None
    ) -> tuple[str, str, str, str]:
        """``(scheme, netloc, path, query)`` of the request, as ``BaseURL.build`` makes them."""
        query_string = (
            "&".join(f"{queryencode(name)}={queryencode(value)}" for name, value in sorted(query.items()))
            if query
            else ""
        )
        if key and not (query and "location" in query):
            # for an object, BaseURL.build's URL depends on the bucket and region only
            known = self._object_urls.get((bucket, region))
            if known is None:
                url = self.client._base_url.build(
                    method="GET", region=region, bucket_name=bucket, object_name="o"
                )
                known = url.scheme, url.netloc, url.path[:-1]
                self._object_urls[bucket, region] = known
            scheme, netloc, prefix = known
            return scheme, netloc, prefix + quote(key), query_string
        url = self.client._base_url.build(
            method=method,
            region=region,
            bucket_name=bucket,
            object_name=key,
            query_params=cast(Any, query),
        )
        return url.scheme, url.netloc, url.path, url.query

    def _open(
        self,
        pool: urllib3.HTTPConnectionPool,
        method: str,
        target: str,
        body: bytes | bytearray | None,
        headers: dict[str, str],
        preload_content: bool,
    ) -> urllib3.BaseHTTPResponse:
        """``pool.urlopen(method, target, ..., retries=False, redirect=False)``, in fewer steps.

        The steps and errors are those of urllib3 2.x's ``urlopen`` and ``_make_request``
        without what objstore never uses (retries, redirects, proxies, per-call timeouts,
        file bodies): an error closes the connection and is raised as urllib3 raises it
        (``ProtocolError`` for a socket or ``http.client`` error, ``ReadTimeoutError``,
        ``SSLError``, ``NewConnectionError``...), and the pool always gets its slot back.
        """
        conn = pool._get_conn()
        clean = False
        try:
            conn.timeout = self._connect_timeout
            try:
                pool._validate_conn(conn)  # HTTPS: connects now, and checks the certificate
            except (TimeoutError, BaseSSLError) as exc:
                pool._raise_timeout(err=exc, url=target, timeout_value=conn.timeout)
                raise
            try:
                data = cast(bytes | None, body)  # a bytearray goes as bytes do
                conn.request(method, target, body=data, headers=headers, preload_content=preload_content)
            except BrokenPipeError:
                pass  # the server may answer before it reads the whole body
            except OSError as exc:
                if exc.errno not in (errno.EPROTOTYPE, errno.ECONNRESET):
                    raise
            read_timeout = self._read_timeout
            if not conn.is_closed:
                conn.timeout = read_timeout
            try:
                response = conn.getresponse()
            except (BaseSSLError, OSError) as exc:
                pool._raise_timeout(err=exc, url=target, timeout_value=read_timeout)
                raise
            clean = True
        except (http_errors.HTTPError, HTTPException, OSError, BaseSSLError, CertificateError) as exc:
            # urlopen's mapping; of urllib3's own errors, only these can come from here
            error: Exception = (
                http_errors.SSLError(exc) if isinstance(exc, BaseSSLError | CertificateError) else exc
            )
            if isinstance(error, OSError | HTTPException):
                error = http_errors.ProtocolError("Connection aborted.", error)
            if error is exc:
                raise
            raise error from exc
        finally:
            if not clean:
                conn.close()
                pool._put_conn(None)  # the slot, without the connection
        response._pool = pool  # type: ignore[attr-defined]
        if preload_content:
            pool._put_conn(conn)  # the body is read: the connection can serve again
        else:
            response._connection = conn  # type: ignore[attr-defined]
        return response

    def _pool(self, scheme: str, netloc: str) -> urllib3.HTTPConnectionPool:
        """The endpoint's connection pool, from the client's pool manager (again once closed)."""
        pool = self._pools.get((scheme, netloc))
        if pool is None or pool.pool is None:
            url = urllib3.util.parse_url(f"{scheme}://{netloc}")
            pool = self._http.connection_from_host(url.host, url.port, scheme)
            self._pools[scheme, netloc] = pool
        return pool

    def _error(
        self,
        method: str,
        bucket: str,
        key: str | None,
        path: str,
        response: urllib3.BaseHTTPResponse,
        preload_content: bool,
    ) -> MinioException:
        """The error ``Minio._url_open`` raises for a failed answer (which is read, and released)."""
        response.read(cache_content=True)
        if not preload_content:
            response.release_conn()
        content_type = response.headers.get("content-type")
        data = response.data
        if method != "HEAD" and "application/xml" not in (content_type or "").split(";"):
            if response.status == 304 and not data:
                return ServerError(f"server failed with HTTP status code {response.status}", response.status)
            return InvalidResponseError(response.status, content_type, data.decode() if data else None)
        if not data and method != "HEAD":
            return InvalidResponseError(response.status, content_type, None)
        error = S3Error.fromxml(response) if data else None
        if error is None:
            code, message = self._code(method, bucket, key, response)
            if not code:
                return ServerError(f"server failed with HTTP status code {response.status}", response.status)
            error = S3Error(
                response=response,
                code=code,
                message=message,
                resource=path,
                request_id=response.headers.get("x-amz-request-id"),
                host_id=response.headers.get("x-amz-id-2"),
                bucket_name=bucket,
                object_name=key,
            )
        if error.code in ("NoSuchBucket", "RetryHead"):
            self.client._region_map.pop(bucket, None)
        return error

    def _code(
        self, method: str, bucket: str, key: str | None, response: urllib3.BaseHTTPResponse
    ) -> tuple[str | None, str | None]:
        """The code and message ``Minio._url_open`` gives an error answer without a body."""
        status = response.status
        if status in (301, 307, 400):
            code, message = self.client._handle_redirect_response(method, response, bucket, True)
            return code, message
        if status == 403:
            return "AccessDenied", "Access denied"
        if status == 404:
            if key:
                return "NoSuchKey", "Object does not exist"
            return "NoSuchBucket", "Bucket does not exist"
        if status in (405, 501):
            return "MethodNotAllowed", "The specified method is not allowed against this resource"
        if status == 409:
            # minio's own map has a stray comma here, which makes the code a tuple
            return "NoSuchBucket", "Bucket does not exist"
        return None, None
