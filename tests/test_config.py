"""Configuration builds the right store and refuses what it does not know."""

from __future__ import annotations

import os

import pytest

from objstore import ConfigError, PosixStorage, S3Storage, from_config


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
    ],
)
def test_refused(config: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_config(config)  # type: ignore[arg-type]
