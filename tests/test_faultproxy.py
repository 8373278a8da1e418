"""The fault proxy itself: raw HTTP through it to the S3 server, each fault as it shows on the wire.

Requests are signed here (SigV4, for the address they are sent to), so these tests also run
against a real server given by ``OBJSTORE_TEST_S3_ENDPOINT``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import attrs
import pytest

from objstore import S3Storage
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, Injection, Rule

SHORT = 0.2  # trickle_interval in these tests
LIMIT = 0.8  # stall_limit in these tests


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@attrs.frozen
class Signer:
    """Signs S3 requests (SigV4) for whatever ``host:port`` they are sent to."""

    access_key: str
    secret_key: str
    region: str

    def headers(
        self, method: str, host: str, path: str, query: str, body: bytes, extra: dict[str, str]
    ) -> dict[str, str]:
        now = datetime.now(UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest()
        headers = {"Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload, **extra}
        signed = sorted((k.lower(), " ".join(v.split())) for k, v in headers.items())
        names = ";".join(k for k, _ in signed)
        pairs = sorted(tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p)
        canonical = "\n".join(
            [
                method,
                path,
                "&".join(f"{k}={v}" for k, v in pairs),
                "".join(f"{k}:{v}\n" for k, v in signed),
                names,
                payload,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        return headers


@attrs.define
class S3:
    """Signed raw requests to the objects of one bucket, through the proxy or directly."""

    signer: Signer
    bucket: str
    proxy: str
    direct: str

    def target(self, key: str, query: str) -> tuple[str, str]:
        path = "/" + self.bucket + ("/" + quote(key, safe="/~") if key else "")
        return path, query

    def send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        key: str = "",
        query: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a request on ``conn`` (the answer is left to read)."""
        path, query = self.target(key, query)
        host = f"{conn.host}:{conn.port}"
        signed = self.signer.headers(method, host, path, query, body, headers or {})
        conn.putrequest(
            method, path + ("?" + query if query else ""), skip_host=True, skip_accept_encoding=True
        )
        for name, value in signed.items():
            conn.putheader(name, value)
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)

    def connect(self, through_proxy: bool = True) -> http.client.HTTPConnection:
        host, port = (self.proxy if through_proxy else self.direct).rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def call(
        self,
        method: str,
        key: str = "",
        query: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request through the proxy, on a connection of its own; the full answer."""
        conn = self.connect()
        try:
            self.send(conn, method, key, query, body, headers)
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def direct_get(self, key: str) -> Answer:
        """The object as the server has it, not through the proxy."""
        conn = self.connect(through_proxy=False)
        try:
            self.send(conn, "GET", key)
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def direct_put(self, key: str, body: bytes) -> None:
        conn = self.connect(through_proxy=False)
        try:
            self.send(conn, "PUT", key, body=body)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        finally:
            conn.close()


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> FaultProxy:
    fault_proxy.trickle_interval = SHORT
    fault_proxy.stall_limit = LIMIT
    return fault_proxy


@pytest.fixture
def s3(proxy: FaultProxy, s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]) -> S3:
    signer = Signer(s3_endpoint.access_key, s3_endpoint.secret_key, s3_endpoint.region or "us-east-1")
    return S3(signer, s3_bucket(), proxy.endpoint, s3_endpoint.endpoint)


def is_xml(body: bytes) -> bool:
    try:
        ET.fromstring(body)
    except ET.ParseError:
        return False
    return True


# -- no faults ----------------------------------------------------------------------


def test_forwards_requests_and_answers(s3: S3, proxy: FaultProxy) -> None:
    assert s3.call("PUT", "a b/c+d", body=b"hello").status == 200
    assert s3.direct_get("a b/c+d").body == b"hello"
    got = s3.call("GET", "a b/c+d")
    assert (got.status, got.body) == (200, b"hello")
    assert s3.call("GET", "missing").status == 404
    listing = s3.call("GET", query="list-type=2&prefix=a")
    assert listing.status == 200 and b"<Key>a b/c+d</Key>" in listing.body
    assert proxy.requests == 4
    assert proxy.injected == [] and proxy.counts() == {}


def test_head_has_no_body_and_keeps_the_connection(s3: S3) -> None:
    s3.direct_put("k", b"0123456789")
    conn = s3.connect()
    try:
        s3.send(conn, "HEAD", "k")
        head = conn.getresponse()
        assert head.status == 200 and head.getheader("Content-Length") == "10"
        assert head.read() == b""
        sock = conn.sock
        s3.send(conn, "GET", "k")
        assert conn.getresponse().read() == b"0123456789"
        assert conn.sock is sock
    finally:
        conn.close()


def test_keep_alive_serves_requests_on_one_connection(s3: S3, proxy: FaultProxy) -> None:
    conn = s3.connect()
    try:
        s3.send(conn, "PUT", "k", body=b"one")
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("Connection") == "keep-alive"
        sock = conn.sock
        assert sock is not None
        s3.send(conn, "GET", "k")
        second = conn.getresponse()
        assert second.read() == b"one"
        assert conn.sock is sock  # http.client would have reconnected after a close
    finally:
        conn.close()
    assert proxy.requests == 2


def test_chunked_request_body_is_decoded(s3: S3) -> None:
    conn = s3.connect()
    try:
        path, _ = s3.target("chunked", "")
        host = f"{conn.host}:{conn.port}"
        headers = s3.signer.headers("PUT", host, path, "", b"abcdef", {})
        conn.request("PUT", path, body=iter([b"abc", b"def"]), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    assert s3.direct_get("chunked").body == b"abcdef"


def test_forwards_the_request_byte_for_byte() -> None:
    """Request line, headers (Host included) and body reach the upstream as the client sent them."""
    upstream = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"body!"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            received.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with FaultProxy(f"127.0.0.1:{upstream.getsockname()[1]}") as proxy:
            target = "/b/a%2Fb%20c+d?uploadId=x%3Dy&partNumber=2&z"
            request = (
                f"PUT {target} HTTP/1.1\r\nHost: {proxy.endpoint}\r\nX-Amz-Meta-Odd:  v a l \r\n"
                "Content-Length: 5\r\nauthorization: AWS4 whatever\r\n\r\nbody!"
            ).encode()
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
                client.sendall(request)
                answer = b""
                while not answer.endswith(b"ok"):
                    answer += client.recv(65536)
            thread.join(5)
    finally:
        upstream.close()
    head, _, body = received[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == f"PUT {target} HTTP/1.1".encode()
    assert lines[1] == f"Host: {proxy.endpoint}".encode()
    assert b"X-Amz-Meta-Odd: v a l" in lines
    assert b"Content-Length: 5" in lines and b"authorization: AWS4 whatever" in lines
    assert lines[-1] == b"Connection: close"
    assert body == b"body!"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Up: 1\r\n" in answer


def test_unreachable_upstream_answers_502() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with FaultProxy(f"127.0.0.1:{port}", timeout=2) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        conn.request("GET", "/b/k")
        response = conn.getresponse()
        assert response.status == 502 and is_xml(response.read())
        conn.close()


# -- each fault ---------------------------------------------------------------------


def test_status_503_is_not_forwarded(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STATUS_503, method="PUT"))
    conn = s3.connect()
    try:
        s3.send(conn, "PUT", "k", body=b"data")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 503
        assert ET.fromstring(body).findtext("Code") == "SlowDown"
        sock = conn.sock
        s3.send(conn, "GET", "k")  # the connection stays usable
        assert conn.getresponse().status == 404
        assert conn.sock is sock
    finally:
        conn.close()
    assert s3.direct_get("k").status == 404
    assert proxy.injected == [Injection("PUT", f"/{s3.bucket}/k", "", Fault.STATUS_503)]


def test_reset_is_not_forwarded(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.RESET, method="PUT"))
    with pytest.raises(ConnectionResetError):
        s3.call("PUT", "k", body=b"data")
    assert s3.direct_get("k").status == 404
    assert proxy.counts() == {"RESET": 1}


def test_reset_after_loses_the_answer_of_an_applied_request(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.RESET_AFTER, method="PUT"))
    with pytest.raises(ConnectionResetError):
        s3.call("PUT", "k", body=b"data")
    assert s3.direct_get("k").body == b"data"
    assert proxy.counts() == {"RESET_AFTER": 1}


def test_status_500_after_hides_an_applied_request(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STATUS_500_AFTER, method="PUT"))
    answer = s3.call("PUT", "k", body=b"data")
    assert answer.status == 500
    assert ET.fromstring(answer.body).findtext("Code") == "InternalError"
    assert "ETag" not in answer.headers
    assert s3.direct_get("k").body == b"data"


def test_cut_sends_half_the_body_then_closes(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"0123456789")
    proxy.plan(Rule(Fault.CUT, method="GET"))
    conn = s3.connect()
    try:
        s3.send(conn, "GET", "k")
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "10"
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        assert cut.value.partial == b"01234"
    finally:
        conn.close()


def test_cut_consistent_rewrites_the_length(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"0123456789")
    etag = s3.direct_get("k").headers["ETag"]
    proxy.plan(Rule(Fault.CUT_CONSISTENT, method="GET", times=1))
    conn = s3.connect()
    try:
        s3.send(conn, "GET", "k")
        response = conn.getresponse()
        assert response.read() == b"01234"
        assert response.getheader("Content-Length") == "5"
        assert response.getheader("ETag") == etag
        sock = conn.sock
        s3.send(conn, "GET", "k")  # the framing is right, so the connection goes on
        assert conn.getresponse().read() == b"0123456789"
        assert conn.sock is sock
    finally:
        conn.close()


def test_garble_breaks_xml(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"data")
    clean = s3.call("GET", query="list-type=2")
    assert is_xml(clean.body)
    proxy.plan(Rule(Fault.GARBLE, query="list-type"))
    garbled = s3.call("GET", query="list-type=2")
    assert garbled.status == 200
    assert len(garbled.body) == len(clean.body) == int(garbled.headers["Content-Length"])
    assert garbled.body != clean.body
    assert not is_xml(garbled.body)


def test_garble_flips_bits_of_other_bodies(s3: S3, proxy: FaultProxy) -> None:
    data = bytes(range(256)) * 4
    s3.direct_put("k", data)
    proxy.plan(Rule(Fault.GARBLE, method="GET"))
    garbled = s3.call("GET", "k")
    assert garbled.status == 200 and len(garbled.body) == len(data)
    differing = [i for i in range(len(data)) if garbled.body[i] != data[i]]
    assert 0 < len(differing) <= 4
    assert all(garbled.body[i] == data[i] ^ 0xFF for i in differing)


def test_garble_leaves_an_empty_body(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("empty", b"")
    proxy.plan(Rule(Fault.GARBLE, method="GET"))
    answer = s3.call("GET", "empty")
    assert (answer.status, answer.body) == (200, b"")
    assert proxy.counts() == {"GARBLE": 1}


def test_stall_trickles_the_body(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"abc")
    proxy.plan(Rule(Fault.STALL, method="GET"))
    conn = s3.connect()
    try:
        s3.send(conn, "GET", "k")
        response = conn.getresponse()
        start = time.monotonic()  # the head came, the first byte with it
        assert response.status == 200 and response.getheader("Content-Length") == "3"
        assert response.read(1) == b"a"
        assert time.monotonic() - start < SHORT
        assert response.read() == b"bc"
        assert time.monotonic() - start >= SHORT
    finally:
        conn.close()


def test_stall_gives_up_after_the_limit(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"x" * 100)
    proxy.plan(Rule(Fault.STALL, method="GET"))
    conn = s3.connect()
    try:
        start = time.monotonic()
        s3.send(conn, "GET", "k")
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        elapsed = time.monotonic() - start
        assert 0 < len(cut.value.partial) <= LIMIT / SHORT + 1
        assert LIMIT - 0.05 <= elapsed < LIMIT + 2
    finally:
        conn.close()


def test_stall_headers_delays_the_answer(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STALL_HEADERS, method="PUT"))
    start = time.monotonic()
    answer = s3.call("PUT", "k", body=b"data")
    assert answer.status == 200
    assert time.monotonic() - start >= LIMIT - 0.05
    assert s3.direct_get("k").body == b"data"


def test_stop_ends_every_stall_at_once(s3: S3, proxy: FaultProxy) -> None:
    s3.direct_put("k", b"x" * 100)
    proxy.stall_limit = 30
    proxy.plan(Rule(Fault.STALL_HEADERS, method="PUT"), Rule(Fault.STALL, method="GET"))
    errors: list[BaseException] = []

    def call(method: str, key: str, body: bytes) -> None:
        try:
            s3.call(method, key, body=body)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=call, args=("PUT", "other", b"y")),
        threading.Thread(target=call, args=("GET", "k", b"")),
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while proxy.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    start = time.monotonic()
    proxy.stop()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - start < 2
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 2


# -- choosing requests --------------------------------------------------------------


def test_rules_select_by_method_and_query(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STATUS_503, method="POST", query="uploads"))
    assert s3.call("PUT", "k", body=b"data").status == 200
    assert s3.call("GET", "k").status == 200
    assert s3.call("POST", "k", query="uploads").status == 503
    assert s3.call("GET", query="list-type=2").status == 200
    assert [i.query for i in proxy.injected] == ["uploads"]


def test_rules_select_by_header_and_body(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(
        Rule(Fault.STATUS_503, has_header="IF-NONE-MATCH"),
        Rule(Fault.STATUS_500_AFTER, method="PUT", body=False),
    )
    assert s3.call("PUT", "k", body=b"data").status == 200
    assert s3.call("PUT", "k", body=b"data", headers={"If-None-Match": "*"}).status == 503
    assert s3.call("PUT", "empty").status == 500
    assert proxy.counts() == {"STATUS_503": 1, "STATUS_500_AFTER": 1}


def test_times_and_skip(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STATUS_503, method="GET", skip=1, times=2))
    statuses = [s3.call("GET", "k").status for _ in range(5)]
    assert statuses == [404, 503, 503, 404, 404]
    assert proxy.requests == 5 and proxy.counts() == {"STATUS_503": 2}


def test_first_rule_that_fires_wins(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(
        Rule(Fault.STATUS_503, method="GET", times=1),
        Rule(Fault.STATUS_500_AFTER, method="GET", times=1),
        Rule(Fault.STATUS_503, times=1),
    )
    statuses = [s3.call("GET", "k").status for _ in range(4)]
    assert statuses == [503, 500, 503, 404]


def test_probability_is_seeded(s3: S3, proxy: FaultProxy) -> None:
    def run(seed: int) -> list[int]:
        proxy.plan(Rule(Fault.STATUS_503, probability=0.5), seed=seed)
        return [s3.call("GET", "k").status for _ in range(30)]

    first = run(7)
    assert 0 < first.count(503) < 30
    assert run(7) == first
    proxy.plan(Rule(Fault.STATUS_503, probability=0.0))
    assert s3.call("GET", "k").status == 404


def test_plan_replaces_and_clear_removes_faults(s3: S3, proxy: FaultProxy) -> None:
    proxy.plan(Rule(Fault.STATUS_503))
    assert s3.call("GET", "k").status == 503
    proxy.plan(Rule(Fault.STATUS_500_AFTER))
    assert s3.call("GET", "k").status == 500
    proxy.clear()
    assert s3.call("GET", "k").status == 404
    assert proxy.counts() == {"STATUS_503": 1, "STATUS_500_AFTER": 1}


# -- fixtures -----------------------------------------------------------------------


def test_proxied_storage_goes_through_the_proxy(
    proxied_storage: Callable[..., S3Storage], fault_proxy: FaultProxy
) -> None:
    storage = proxied_storage(retries=0, timeout=5)
    assert storage.endpoint == fault_proxy.endpoint
    before = fault_proxy.requests
    assert list(storage.list_keys()) == []
    assert fault_proxy.requests > before
