"""S3Storage's settings: the endpoint forms it takes, and every bad setting as an objstore error."""

from __future__ import annotations

from typing import Any

import pytest

from objstore import InvalidArgumentError, S3Storage
from objstore.s3.storage import parse_endpoint


@pytest.mark.parametrize(
    ("endpoint", "secure", "netloc", "tls"),
    [
        ("h:9000", None, "h:9000", True),
        ("h:9000", False, "h:9000", False),
        ("h", None, "h", True),
        ("http://h:9000", None, "h:9000", False),
        ("http://h:9000/", None, "h:9000", False),
        ("HTTP://h:9000", False, "h:9000", False),
        ("https://s3.example.com", None, "s3.example.com", True),
        ("https://s3.example.com:443", True, "s3.example.com:443", True),
        ("http://127.0.0.1:9000", None, "127.0.0.1:9000", False),
        ("[::1]:9000", False, "[::1]:9000", False),
        ("http://[::1]:9000", None, "[::1]:9000", False),
        ("minio_1:9000", False, "minio_1:9000", False),
        ("s3.eu-west-1.amazonaws.com", None, "s3.eu-west-1.amazonaws.com", True),
    ],
)
def test_endpoint_forms(endpoint: str, secure: bool | None, netloc: str, tls: bool) -> None:
    storage = S3Storage(endpoint, "bucket", secure=secure)
    assert storage.endpoint == netloc
    assert storage._settings["endpoint"] == netloc and storage._settings["secure"] is tls


@pytest.mark.parametrize(
    ("endpoint", "named"),
    [
        ("ftp://h:21", "'ftp'"),
        ("s3://bucket", "'s3'"),
        ("h/path", "'h/path'"),
        ("http://h:9000/bucket", "'http://h:9000/bucket'"),
        ("http://h?x=1", "'http://h?x=1'"),
        ("h:9000?", "'h:9000?'"),
        ("http://h#top", "'http://h#top'"),
        ("h:port", "'h:port'"),
        ("http://h:port", "'http://h:port'"),
        ("h:70000", "'h:70000'"),
        ("h:0", "'h:0'"),
        ("h:", "'h:'"),
        ("http://", "'http://'"),
        ("h w:9000", "'h w:9000'"),
        ("[::1", "'[::1'"),
        ("", "''"),
        (None, "None"),
        (9000, "9000"),
        ("dynamodb.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com"),
    ],
)
def test_bad_endpoints_are_named(endpoint: object, named: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        S3Storage(endpoint, "bucket")  # type: ignore[arg-type]
    assert named in str(caught.value)


def test_endpoint_credentials_are_refused_and_not_echoed() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        S3Storage("https://user:hunter2@h:9000", "bucket")
    assert "hunter2" not in str(caught.value) and "access_key" in str(caught.value)


@pytest.mark.parametrize(("endpoint", "secure"), [("http://h:9000", True), ("https://h", False)])
def test_scheme_and_secure_must_agree(endpoint: str, secure: bool) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        S3Storage(endpoint, "bucket", secure=secure)
    message = str(caught.value)
    assert repr(endpoint) in message and f"secure={secure}" in message
    assert S3Storage(endpoint, "bucket", secure=not secure).endpoint == endpoint.split("://")[1]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"secure": "yes"}, "secure"),
        ({"region": "eu west"}, "region"),
        ({"region": ""}, "region"),
        ({"access_key": "a"}, "secret_key"),
        ({"secret_key": "s"}, "access_key"),
        ({"access_key": "", "secret_key": "s"}, "access_key"),
        ({"session_token": "t"}, "session_token"),
        ({"part_size": 1024}, "part_size"),
        ({"part_size": 5.5e6}, "part_size"),
        ({"retries": -1}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "60"}, "timeout"),
        ({"backoff": -0.1}, "backoff"),
    ],
)
def test_bad_settings_are_named(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        S3Storage("h:9000", "bucket", **options)


@pytest.mark.parametrize("bucket", ["", "a/b", None])
def test_bad_bucket(bucket: object) -> None:
    with pytest.raises(InvalidArgumentError, match="bucket"):
        S3Storage("h:9000", bucket)  # type: ignore[arg-type]


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        S3Storage("h:9000", "bucket", access_key="AKIA", secret_key=12345)  # type: ignore[arg-type]
    assert "12345" not in str(caught.value) and "secret_key" in str(caught.value)


def test_settings_round_trip() -> None:
    """tests/storage_worker.py opens the same store from ``_settings`` in another process."""
    storage = S3Storage(
        "http://127.0.0.1:9000",
        "bucket",
        access_key="a",
        secret_key="s",
        session_token="t",
        region="eu-west-1",
    )
    settings = dict(storage._settings)
    assert settings == {
        "endpoint": "127.0.0.1:9000",
        "access_key": "a",
        "secret_key": "s",
        "session_token": "t",
        "secure": False,
        "region": "eu-west-1",
    }
    again = S3Storage(settings.pop("endpoint"), "bucket", **settings)
    assert again._settings == storage._settings
    assert S3Storage(**storage._settings, bucket="bucket")._settings == storage._settings


def test_building_does_not_connect() -> None:
    storage = S3Storage("127.0.0.1:1", "bucket", secure=False)  # nothing listens there
    assert repr(storage) == "S3Storage('127.0.0.1:1', 'bucket')"
    storage.close()


def test_parse_endpoint() -> None:
    assert parse_endpoint("h:1") == ("h:1", None)
    assert parse_endpoint("http://h:1") == ("h:1", False)
    assert parse_endpoint("https://h") == ("h", True)
