"""Presigned URLs: a plain HTTP client with no credentials gets and puts objects with them."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import pytest
import urllib3

from objstore import InvalidArgumentError, InvalidKeyError, S3Storage
from tests.conftest import S3Endpoint


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]) -> S3Storage:
    return s3_endpoint.storage(s3_bucket())


def test_a_presigned_get_needs_no_credentials(s3: S3Storage) -> None:
    s3.write("reports/q3.csv", b"region,total\nnorth,12\n")
    url = s3.presign("reports/q3.csv", expires=timedelta(minutes=5))
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
    response = urllib3.PoolManager().request("GET", url)
    assert response.status == 200 and response.data == b"region,total\nnorth,12\n"


def test_a_presigned_put_stores_the_object(s3: S3Storage) -> None:
    url = s3.presign("uploads/a.bin", method="PUT")
    response = urllib3.PoolManager().request("PUT", url, body=b"\x00\x01uploaded")
    assert response.status == 200
    assert s3.read_bytes("uploads/a.bin") == b"\x00\x01uploaded"


def test_a_url_for_one_key_serves_no_other(s3: S3Storage) -> None:
    if not os.environ.get("OBJSTORE_TEST_S3_ENDPOINT"):
        pytest.skip("moto does not check the signature of presigned URLs; run against MinIO or AWS")
    s3.write("a", b"alpha")
    s3.write("b", b"beta")
    url = s3.presign("a")
    tampered = url.replace(f"/{s3.bucket}/a?", f"/{s3.bucket}/b?")
    assert urllib3.PoolManager().request("GET", tampered).status == 403


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"method": "DELETE"}, InvalidArgumentError, "'DELETE'"),
        ({"expires": timedelta(days=8)}, InvalidArgumentError, "days=8"),
        ({"expires": timedelta(0)}, InvalidArgumentError, "timedelta(0)"),
        ({"expires": 60}, InvalidArgumentError, "60"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    s3: S3Storage, arguments: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named.replace("(", r"\(").replace(")", r"\)")):
        s3.presign("k", **arguments)  # type: ignore[arg-type]


def test_a_bad_key_is_refused(s3: S3Storage) -> None:
    with pytest.raises(InvalidKeyError):
        s3.presign("a/../b")
