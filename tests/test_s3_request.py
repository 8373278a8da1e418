"""The lean request path sends what minio would: the same URL, headers and signature.

``objstore.s3.request.Requests`` builds URLs and headers itself (signed by minio) and
``objstore.s3.wire`` reads answer heads without the ``email`` package; these tests pin
both to what minio and ``http.client`` do, so a minio or Python upgrade that changes
them fails here. Requests also arm a deadline each, whose disarmed alarms must not pile up.
"""

from __future__ import annotations

import http.client
import io
from datetime import UTC, datetime

import pytest
from minio.signer import sign_v4_s3

from objstore.s3 import S3Storage
from objstore.s3.deadline import _COMPACT, WATCHDOG, deadline
from objstore.s3.request import Requests
from objstore.s3.wire import Head, parse_head

KEYS = ["k", "a/b/c.txt", "spaces and ~tilde~/ünïcode+plus=eq&amp?q#h", "trailing/", "a//b"]
QUERIES: list[dict[str, str] | None] = [
    None,
    {"uploads": ""},
    {"partNumber": "3", "uploadId": "abc/def+ghi=="},
    {"list-type": "2", "prefix": "a b/", "delimiter": "/", "start-after": "x~y"},
]


def requests_of(endpoint: str, region: str | None, session_token: str | None = None) -> Requests:
    storage = S3Storage(
        endpoint,
        "objstore-bucket",
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=session_token,
        region=region,
    )
    return Requests(storage._client)


@pytest.mark.parametrize(
    ("endpoint", "region", "token"),
    [
        ("http://127.0.0.1:9000", "us-east-1", None),
        ("https://minio.example.com", "eu-west-1", "a-session-token"),
        ("https://s3.amazonaws.com", "eu-central-1", None),  # virtual-host style on AWS
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "POST", "HEAD", "DELETE"])
def test_requests_are_what_minio_sends(
    endpoint: str, region: str, token: str | None, method: str
) -> None:
    requests = requests_of(endpoint, region, token)
    client = requests.client
    assert client._provider is not None
    credentials = client._provider.retrieve()
    for key in [*KEYS, None]:
        for query in QUERIES:
            if key is None and query is None:
                continue
            body = b"x" * 100 if method in ("PUT", "POST") else None
            headers = {"Content-Type": "text/plain;  charset=utf-8 ", "If-Match": '"e t a g"'}
            scheme, netloc, path, target, signed = requests.prepare(
                method, region, "objstore-bucket", key, body, headers, query
            )
            url = client._base_url.build(
                method=method,
                region=region,
                bucket_name="objstore-bucket",
                object_name=key,
                query_params=dict(query) if query else None,
            )
            assert (scheme, netloc, path) == (url.scheme, url.netloc, url.path)
            assert target == (f"{url.path}?{url.query}" if url.query else url.path)
            date = datetime.strptime(signed["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            unsigned = {name: value for name, value in signed.items() if name != "Authorization"}
            expected = sign_v4_s3(
                method=method,
                url=url,
                region=region,
                headers=dict(unsigned),
                credentials=credentials,
                content_sha256=signed["x-amz-content-sha256"],
                date=date,
            )
            assert signed["Authorization"] == expected["Authorization"]
            built, _ = client._build_headers(url.netloc, dict(headers), body, credentials)
            assert {name: value for name, value in built.items() if name != "x-amz-date"} == {
                name: value for name, value in unsigned.items() if name != "x-amz-date"
            }


HEADS = [
    b'Server: W\r\nETag: "abc"\r\nContent-Length:  12 \r\nx-amz-meta-a: b\r\nX-Amz-Meta-A: c\r\n\r\nbody',
    b"A:\r\nB: \t c\r\n\n",
    b"\r\n",
    b"",
    b"A: b\r\n",  # cut before the blank line
    b"Server: W\r\n folded\r\nETag: x\r\n\r\n",  # a continuation line
    b"Not a header\r\nETag: x\r\n\r\n",
    b"A: b\rc\r\n\r\n",
    b"A: b",
    b"Caf\xe9: cr\xe8me\r\n\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_answer_heads_are_read_as_http_client_reads_them(head: bytes) -> None:
    ours = parse_head(io.BytesIO(head))
    theirs = http.client.parse_headers(io.BytesIO(head))
    assert ours.items() == theirs.items()
    assert [type(defect) for defect in ours.defects] == [type(defect) for defect in theirs.defects]
    assert ours.get_payload() == theirs.get_payload()
    for name in ["etag", "ETAG", "x-amz-meta-a", "content-length", "missing", "Café"]:
        assert ours.get(name) == theirs.get(name)
        assert ours.get_all(name) == theirs.get_all(name)


def test_a_changed_head_is_looked_up_as_changed() -> None:
    head = parse_head(io.BytesIO(b"A: 1\r\nB: 2\r\nA: 3\r\n\r\n"))
    assert isinstance(head, Head)
    del head["a"]
    assert head.get("A") is None and head.get("b") == "2"
    head["A"] = "4"
    assert head.get("a") == "4"
    head["C"] = "5"
    assert head.get("c") == "5"


def test_disarmed_deadlines_do_not_pile_up() -> None:
    """The watchdog sleeps until the first deadline; the alarms disarmed meanwhile are dropped."""
    with deadline(60):  # the first deadline: the watchdog sleeps for a minute
        for _ in range(5000):
            with deadline(60):
                pass
        assert len(WATCHDOG._alarms) <= 2 * _COMPACT
