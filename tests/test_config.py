"""Configuration builds the right store and refuses what it does not know."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from objstore import ConfigError, MemoryStorage, PosixStorage, PrefixedStorage, S3Storage, from_config
from tests.awsenv import isolate


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS variable, and a home without ~/.aws: the real one is never read."""
    return isolate(monkeypatch, tmp_path)


def test_posix(tmp_path: os.PathLike[str]) -> None:
    storage = from_config({"type": "posix", "path": str(tmp_path)})
    assert isinstance(storage, PosixStorage)


def test_s3_scheme_decides_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    plain = from_config(
        {
            "type": "s3",
            "endpoint": "http://127.0.0.1:9000",
            "bucket": "b",
            "access_key": "a",
            "secret_key": "s",
        }
    )
    assert isinstance(plain, S3Storage)
    assert plain.endpoint == "127.0.0.1:9000" and plain._settings["secure"] is False
    secure = from_config(
        {"type": "s3", "endpoint": "https://s3.example.com", "bucket": "b", "location": "eu-west-1"}
    )
    assert isinstance(secure, S3Storage)
    assert secure._settings["secure"] is True and secure._settings["region"] == "eu-west-1"


def test_s3_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-access")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    storage = from_config({"type": "s3", "endpoint": "http://h:1", "bucket": "b"})
    assert isinstance(storage, S3Storage)
    settings = storage._settings
    assert (settings["access_key"], settings["secret_key"], settings["region"]) == (
        "env-access",
        "env-secret",
        "ap-south-1",
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "posixflat", "path": "x"}, "internal"),
        ({"type": "ftp"}, "'ftp'"),
        ({}, "None"),
        ({"type": "posix"}, "misses field(s): path"),
        ({"type": "posix", "path": "x", "pth": "y", "zz": 1}, "unknown field(s): pth, zz"),
        ({"type": "s3", "bucket": "b"}, "misses field(s): endpoint"),
        ({"type": "s3", "endpoint": "ftp://h", "bucket": "b"}, "ftp://h"),
        ({"type": "s3", "endpoint": "h:9000", "bucket": "b"}, "h:9000"),
        ({"type": "s3", "endpoint": "http://h:port", "bucket": "b"}, "port"),
        (
            {"type": "s3", "endpoint": "http://h", "bucket": "b", "access_key": "a", "secret_key": None},
            "secret_key",
        ),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "part_size": 1024}, "part_size"),
        ({"type": "posix", "path": ""}, "empty"),
        ("posix", "mapping"),
        ({"type": "posix", "path": "file:///srv/store"}, "field 'path' is a folder path, not a URL"),
        ({"type": "posix", "path": 5}, "field 'path' is a string"),
        ({"type": "posix", "path": "x", "prefix": "a/../b"}, "field 'prefix'"),
        ({"type": "posix", "path": "x", "prefix": "/abs"}, "field 'prefix'"),
        ({"type": "posix", "path": "x", "region": "eu-west-1"}, "unknown field(s): region"),
        ({"type": "memory", "path": "x"}, "unknown field(s): path"),
        ({"type": "memory", "prefix": ".."}, "field 'prefix'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "retries": "5"}, "field 'retries'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "retries": -1}, "field 'retries'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "timeout": -1}, "field 'timeout'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "timeout": True}, "field 'timeout'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "backoff": "fast"}, "field 'backoff'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "prefix": "a/./b"}, "field 'prefix'"),
        ({"type": "s3", "endpoint": "http://h:99999", "bucket": "b"}, "field 'endpoint'"),
        ({"type": "s3", "endpoint": "http://h/x", "bucket": "b"}, "field 'endpoint'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "a/b"}, "field 'bucket'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "region": "eu west"}, "field 'region'"),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "location": "x y"}, "field 'location'"),
        (
            {"type": "s3", "endpoint": "http://h", "bucket": "b", "region": "a-1", "location": "a-1"},
            "'region' and 'location'",
        ),
        ({"type": "s3", "endpoint": "http://h", "bucket": "b", "profile": "nope"}, "'nope'"),
    ],
)
def test_refused(config: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_config(config)  # type: ignore[arg-type]


def test_posix_prefix(tmp_path: Path) -> None:
    with from_config({"type": "posix", "path": str(tmp_path), "prefix": "team/a"}) as storage:
        assert isinstance(storage, PrefixedStorage) and storage.prefix == "team/a/"
        assert isinstance(storage.storage, PosixStorage)
        storage.write("k", b"v")
    assert (tmp_path / "data" / "team" / "a" / "k").read_bytes() == b"v"


def test_memory() -> None:
    assert isinstance(from_config({"type": "memory"}), MemoryStorage)
    prefixed = from_config({"type": "memory", "prefix": "p/"})
    assert isinstance(prefixed, PrefixedStorage) and isinstance(prefixed.storage, MemoryStorage)


def test_s3_fields() -> None:
    config: dict[str, Any] = {
        "type": "s3",
        "endpoint": "https://h:9443",
        "bucket": "b",
        "region": "eu-west-1",
        "access_key": "a",
        "secret_key": "s",
        "session_token": "t",
        "retries": 0,
        "backoff": 1,
        "timeout": 0.5,
        "part_size": 5 << 20,
        "prefix": "runs",
    }
    storage = from_config(config)
    assert isinstance(storage, PrefixedStorage) and storage.prefix == "runs/"
    inner = storage.storage
    assert isinstance(inner, S3Storage)
    assert inner._settings == {
        "endpoint": "h:9443",
        "access_key": "a",
        "secret_key": "s",
        "session_token": "t",
        "secure": True,
        "region": "eu-west-1",
    }
    assert (inner.retries, inner.backoff, inner.timeout, inner.part_size) == (0, 1, 0.5, 5 << 20)
    location = from_config({"type": "s3", "endpoint": "http://h", "bucket": "b", "location": "ap-east-1"})
    assert isinstance(location, S3Storage) and location._settings["region"] == "ap-east-1"
