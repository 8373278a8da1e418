"""The benchmarks' ``--concurrent`` S3 server answers ranged GETs and completes multipart uploads
exactly as the tests' default one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests import s3server

BUCKET = "modes"
#: One object kept in memory by moto, one rolled over to a file (past its buffer, the
#: default 5 MiB - 1 KiB in both modes here: the benchmarks' mode keeps up to 4 GiB).
SIZES = {"small": 100_003, "large": 6 * 1024 * 1024 + 7}


@pytest.fixture(scope="module")
def clients() -> Iterator[list[Any]]:
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(2) as pool:
        patch.setenv("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(5 * 1024 * 1024 - 1024))
        servers = list(pool.map(lambda serialized: s3server.start(serialized=serialized), (True, False)))
    try:
        made = []
        for server in servers:
            client = boto3.client(
                "s3",
                endpoint_url=f"http://{server.endpoint}",
                aws_access_key_id=s3server.ACCESS_KEY,
                aws_secret_access_key=s3server.SECRET_KEY,
                region_name="us-east-1",
                config=Config(retries={"max_attempts": 1}),
            )
            client.create_bucket(Bucket=BUCKET)
            for name, size in SIZES.items():
                client.put_object(Bucket=BUCKET, Key=name, Body=bytes(i % 251 for i in range(size)))
            made.append(client)
        yield made
    finally:
        for server in servers:
            server.stop()


def _answer(client: Any, key: str, **extra: str) -> tuple[Any, ...]:
    try:
        got = client.get_object(Bucket=BUCKET, Key=key, **extra)
    except ClientError as error:
        meta = error.response["ResponseMetadata"]
        return ("error", meta["HTTPStatusCode"], error.response["Error"].get("Code"))
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    body = got["Body"].read()
    kept = ("content-range", "content-length", "etag", "accept-ranges", "content-type")
    return (
        got["ResponseMetadata"]["HTTPStatusCode"],
        {name: headers.get(name) for name in kept},
        len(body),
        hashlib.sha256(body).hexdigest(),
    )


@pytest.mark.parametrize("key", sorted(SIZES))
def test_ranged_gets_answer_alike_in_both_modes(clients: list[Any], key: str) -> None:
    size = SIZES[key]
    ranges = [
        "bytes=0-0",
        "bytes=0-99",
        f"bytes=5-{size // 2}",
        f"bytes={size - 10}-{size - 1}",  # the end of the object
        f"bytes={size - 10}-{size + 100}",  # past the end: cut to it
        f"bytes={size - 1}-",
        "bytes=-7",  # a suffix
        f"bytes=-{size + 5}",  # a suffix longer than the object
        f"bytes={size}-",  # unsatisfiable: 416
        f"bytes={size + 10}-{size + 20}",  # unsatisfiable: 416
        "bytes=0-1,5-6",  # several ranges: moto answers the whole object
        "bytes=x-y",  # unparsable: the whole object
        "bytes=9-3",  # reversed: the whole object
    ]
    serialized, concurrent = clients
    etag = serialized.head_object(Bucket=BUCKET, Key=key)["ETag"]
    for text in ranges:
        assert _answer(concurrent, key, Range=text) == _answer(serialized, key, Range=text), text
    for extra in ({}, {"IfMatch": etag, "Range": "bytes=3-30"}, {"IfMatch": '"0"', "Range": "bytes=3-30"}):
        assert _answer(concurrent, key, **extra) == _answer(serialized, key, **extra), extra
    assert _answer(concurrent, key, IfMatch='"0"', Range="bytes=3-30")[:2] == ("error", 412)
    assert _answer(concurrent, key, Range=f"bytes={size}-")[:2] == ("error", 416)
    suffix = _answer(concurrent, key, Range="bytes=-7")
    assert suffix[1]["content-range"] == f"bytes {size - 7}-{size - 1}/{size}"


PART = 5 * 1024 * 1024  # S3's smallest part but the last
#: What a multipart upload asks for: nothing (as objstore: moto keeps a whole-object CRC64NVME
#: then, a CRC32 without awscrt, and shows only its type), a CRC32 of the whole object, of the parts.
UPLOAD_CHECKSUMS: dict[str, dict[str, str]] = {
    "none": {},
    "crc32-full": {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"},
    "crc32-composite": {"ChecksumAlgorithm": "CRC32"},
}


def _part(number: int, size: int) -> bytes:
    pattern = bytes((i * 7 + number) % 256 for i in range(256))
    return (pattern * (size // 256 + 1))[:size]


def _complete(
    client: Any, key: str, sizes: tuple[int, ...], extra: dict[str, str], etags: dict[int, str] | None = None
) -> Any:
    """A multipart upload of parts of ``sizes`` (``extra``: its checksum), completed (``etags``:
    the ETags to send instead)."""
    upload = client.create_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        ContentType="text/x-parts",
        Metadata={"origin": "modes", "Mixed-Case": "Yes"},
        **extra,
    )["UploadId"]
    checksum = {"ChecksumAlgorithm": extra["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in extra else {}
    parts = []
    for number, size in enumerate(sizes, 1):
        sent = client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=_part(number, size), **checksum
        )
        parts.append({"PartNumber": number, "ETag": (etags or {}).get(number, sent["ETag"])})
    try:
        return client.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )["ETag"]
    except ClientError as error:
        return (
            "error",
            error.response["ResponseMetadata"]["HTTPStatusCode"],
            error.response["Error"].get("Code"),
        )


def _stored(client: Any, key: str) -> tuple[Any, ...]:
    """What the server answers about an object: HEAD's headers that matter, its bytes' hash, and
    GetObjectAttributes's raw XML (where moto shows the type of a checksum nobody asked for)."""
    head = client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")["ResponseMetadata"][
        "HTTPHeaders"
    ]
    kept = ("content-type", "content-length", "etag", "x-amz-sdk-checksum-algorithm")
    headers = {
        name: value
        for name, value in head.items()
        if name in kept or name.startswith(("x-amz-meta-", "x-amz-checksum-"))
    }
    got = client.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    body = hashlib.sha256(got["Body"].read()).hexdigest()
    raw: list[bytes] = []

    def keep(http_response: Any, **_: Any) -> None:
        raw.append(http_response.content)

    client.meta.events.register("after-call.s3.GetObjectAttributes", keep)
    try:
        client.get_object_attributes(
            Bucket=BUCKET,
            Key=key,
            ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"],
        )
    finally:
        client.meta.events.unregister("after-call.s3.GetObjectAttributes", keep)
    return headers, body, raw[0]


@pytest.mark.parametrize("checksum", sorted(UPLOAD_CHECKSUMS))
def test_multipart_uploads_complete_alike_in_both_modes(clients: list[Any], checksum: str) -> None:
    sizes = (PART, PART, PART, 12_345)
    key = f"multipart-{checksum}"
    extra = UPLOAD_CHECKSUMS[checksum]
    etags = [_complete(client, key, sizes, extra) for client in clients]
    assert etags[0] == etags[1]
    assert etags[1].endswith('-4"')
    answers = [_stored(client, key) for client in clients]
    assert answers[0] == answers[1]
    headers, body, attributes = answers[1]
    whole = b"".join(_part(number, size) for number, size in enumerate(sizes, 1))
    assert body == hashlib.sha256(whole).hexdigest()
    assert headers["content-length"] == str(len(whole))
    assert headers["content-type"] == "text/x-parts"
    assert headers["x-amz-meta-origin"] == "modes"
    assert b"<ChecksumType>" in attributes  # what moto shows of the whole-object CRC it keeps
    assert ("x-amz-checksum-crc32" in headers) == bool(extra)  # the CRC, asked for


def test_multipart_completion_errors_alike_in_both_modes(clients: list[Any]) -> None:
    small = 1024
    cases = [
        ((small, small), None),  # a part before the last under 5 MiB: EntityTooSmall
        ((small,), {1: '"0123456789abcdef0123456789abcdef"'}),  # a wrong ETag: InvalidPart
    ]
    codes = []
    for sizes, etags in cases:
        answers = [_complete(client, "multipart-error", sizes, {}, etags) for client in clients]
        assert answers[0] == answers[1]
        assert answers[1][:2] == ("error", 400)
        codes.append(answers[1][2])
    assert codes == ["EntityTooSmall", "InvalidPart"]
