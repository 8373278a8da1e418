"""What is particular to the S3 backend: headers on the wire, multipart, retries, paging."""

from __future__ import annotations

import functools
import http.server
import io
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from objstore import (
    AlreadyExistsError,
    InvalidKeyError,
    NotExistError,
    PermissionDeniedError,
    PreconditionFailedError,
    RemoteError,
    S3Storage,
)
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, Rule

PART = 5 << 20


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]) -> S3Storage:
    return s3_endpoint.storage(s3_bucket(), part_size=PART)


def test_conditional_headers_reach_the_server(s3: S3Storage, s3_endpoint: S3Endpoint) -> None:
    s3.write("k", b"first")
    # The pitfall: minio's metadata= turns the header into user metadata, and the write goes through.
    s3_endpoint.client().put_object(s3.bucket, "k", io.BytesIO(b"second"), 6, metadata={"If-None-Match": "*"})
    head = s3_endpoint.boto().head_object(Bucket=s3.bucket, Key="k")
    assert head["Metadata"] == {"if-none-match": "*"}
    # objstore sends real headers: the server refuses, and the object stays as it was.
    with pytest.raises(AlreadyExistsError):
        s3.write("k", b"third", if_none_match=True)
    etag = s3.stat("k").etag
    with pytest.raises(PreconditionFailedError):
        s3.write("k", b"third", if_match="0" * 32)
    assert s3.read_bytes("k") == b"second"
    assert s3.write("k", b"fourth", if_match=etag) != etag
    head = s3_endpoint.boto().head_object(Bucket=s3.bucket, Key="k")
    assert list(head["Metadata"]) == ["objstore-write"]  # the write's identifier, not the condition


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield bytes([start // size % 251]) * min(size, total - start)


def test_unknown_size_streams_as_multipart(s3: S3Storage) -> None:
    total = 2 * PART + 12345
    etag = s3.write("big", chunks(total))
    assert etag.endswith("-3")
    assert s3.stat("big").size == total
    with s3.read("big") as stream:
        assert b"".join(iter(lambda: stream.read(1 << 20), b"")) == b"".join(chunks(total))
    with pytest.raises(AlreadyExistsError):
        s3.write("big", chunks(total), if_none_match=True)
    assert s3.stat("big").etag == etag
    assert s3.write("new-big", chunks(total), if_none_match=True).endswith("-3")
    assert s3.write("two-parts", chunks(2 * PART)).endswith("-2")
    assert s3.read_bytes("two-parts") == b"".join(chunks(2 * PART))
    assert "-" not in s3.write("one-part", chunks(PART))
    assert s3.stat("one-part").size == PART


def test_multipart_conditions_are_checked_before_the_parts_go_up(s3: S3Storage) -> None:
    total = PART + 1
    etag = s3.write("big", chunks(total))
    with pytest.raises(PreconditionFailedError):
        s3.write("big", chunks(total), if_match="0" * 32)
    with pytest.raises(AlreadyExistsError):
        s3.write("big", chunks(total), if_none_match=True)
    with pytest.raises(NotExistError):
        s3.write("missing", chunks(total), if_match=etag)
    assert s3.write("big", chunks(total), if_match=etag)


def test_multipart_conditions_are_checked_on_completion(
    proxied_storage: Callable[..., S3Storage], fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    """Another writer changes the object while the parts go up: the server refuses the completion."""
    if not os.environ.get("OBJSTORE_TEST_S3_ENDPOINT"):
        pytest.skip("moto does not check If-Match on CompleteMultipartUpload; run against MinIO or AWS")
    s3 = proxied_storage(part_size=PART)
    other = s3_endpoint.storage(s3.bucket)
    etag = s3.write("big", chunks(PART + 1))
    fault_proxy.stall_limit = 0  # a stall of nothing: the rule only runs its hook
    for key, condition, error in [
        ("big", {"if_match": etag}, PreconditionFailedError),
        ("new", {"if_none_match": True}, AlreadyExistsError),
    ]:
        meddle = functools.partial(other.write, key, b"x")
        fault_proxy.plan(Rule(Fault.STALL_HEADERS, method="PUT", query="partNumber", times=1, then=meddle))
        with pytest.raises(error):
            s3.write(key, chunks(PART + 1), **condition)  # type: ignore[arg-type]
    assert s3.read_bytes("big") == b"x" and s3.read_bytes("new") == b"x"


def test_paging_and_batched_deletes(s3: S3Storage) -> None:
    keys = [f"p/{i:05d}" for i in range(1100)]
    client = s3._client
    for key in keys:
        client.put_object(s3.bucket, key, io.BytesIO(b""), 0)
    assert [info.key for info in s3.list("p/")] == keys
    assert [info.key for info in s3.list("p/", start_after=keys[500])] == keys[501:]
    s3.delete_many(iter(keys[:1050]))
    assert [info.key for info in s3.list()] == keys[1050:]


class _Failing(http.server.BaseHTTPRequestHandler):
    """Answers every request with one S3 error, and counts the requests."""

    requests = 0
    status = 503
    code = "SlowDown"

    def handle_one_request(self) -> None:
        type(self).requests += 1
        super().handle_one_request()

    def do_GET(self) -> None:
        body = f"<Error><Code>{self.code}</Code><Message>refused</Message></Error>".encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "REQ123")
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_PUT = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "code", "error", "attempts"),
    [
        (503, "SlowDown", RemoteError, 4),
        (500, "InternalError", RemoteError, 4),
        (403, "AccessDenied", PermissionDeniedError, 1),
        (400, "InvalidRequest", RemoteError, 1),
    ],
)
def test_failures_are_typed_and_only_transient_ones_retried(
    status: int, code: str, error: type[Exception], attempts: int
) -> None:
    handler = type("Handler", (_Failing,), {"status": status, "code": code, "requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        storage = S3Storage(
            f"127.0.0.1:{server.server_port}",
            "bucket",
            access_key="a",
            secret_key="b",
            secure=False,
            region="us-east-1",
            retries=3,
            backoff=0.001,
        )
        with pytest.raises(error) as caught:
            storage.read_bytes("k")
    finally:
        server.shutdown()
        server.server_close()
    assert handler.requests == attempts
    assert "'k'" in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)
    if isinstance(caught.value, RemoteError):
        remote = caught.value
        assert (remote.status, remote.code, remote.request_id) == (status, code, "REQ123")
        assert remote.transient == (status >= 500)


def test_unreachable_server_is_a_transient_remote_error() -> None:
    storage = S3Storage(
        "127.0.0.1:1",
        "bucket",
        access_key="a",
        secret_key="b",
        secure=False,
        region="us-east-1",
        retries=1,
        backoff=0.001,
    )
    with pytest.raises(RemoteError) as caught:
        storage.write("k", b"x")
    assert caught.value.transient
    assert caught.value.__cause__ is not None


def test_missing_bucket_is_a_remote_error(s3_endpoint: S3Endpoint) -> None:
    storage = s3_endpoint.storage("objstore-test-no-such-bucket")
    calls: dict[str, Callable[[], object]] = {
        "write": lambda: storage.write("k", b"x"),
        "read": lambda: storage.read_bytes("k"),
        "list": lambda: list(storage.list()),
        "delete": lambda: storage.delete("k"),
        "copy": lambda: storage.copy("k", "k2"),
    }
    for operation, call in calls.items():
        with pytest.raises(RemoteError) as caught:
            call()
        assert caught.value.code == "NoSuchBucket", operation
        assert caught.value.status == 404
        assert not caught.value.transient
        assert "bucket 'objstore-test-no-such-bucket' does not exist" in str(caught.value), operation


def test_copy_to_itself_keeps_the_object(s3: S3Storage) -> None:
    """S3 refuses a copy of an object to itself that changes nothing: objstore makes none."""
    etag = s3.write("k", b"same")
    assert s3.copy("k", "k") == etag
    assert s3.read_bytes("k") == b"same" and s3.stat("k").etag == etag
    with pytest.raises(NotExistError):
        s3.copy("missing", "missing")
    big = s3.write("big", chunks(PART + 1))
    assert s3.copy("big", "big") == big


def test_dot_segments_are_refused_not_rewritten(s3: S3Storage) -> None:
    """urllib3 would turn "a/../b" into "b": such keys are refused before any request."""
    s3.write("b", b"kept")
    for key in ["a/../b", "a/./b", "..", "./x"]:
        with pytest.raises(InvalidKeyError, match="segment"):
            s3.write(key, b"lost")
    assert s3.read_bytes("b") == b"kept"
    assert [entry.key for entry in s3.list()] == ["b"]
