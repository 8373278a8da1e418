"""from_url: the URL forms, their options, and every wrong value as a ConfigError that names it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from objstore import (
    ConfigError,
    MemoryStorage,
    PosixStorage,
    PrefixedStorage,
    S3Storage,
    Storage,
    from_config,
    from_url,
)
from tests.awsenv import isolate
from tests.conftest import S3Endpoint


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


def unwrap(storage: Storage, prefix: str) -> Storage:
    assert isinstance(storage, PrefixedStorage) and storage.prefix == prefix
    return storage.storage


def test_s3_url() -> None:
    plain = from_url("s3://ci-data", region="eu-west-1")
    assert isinstance(plain, S3Storage) and plain.bucket == "ci-data"
    assert plain.endpoint == "s3.eu-west-1.amazonaws.com"
    for url in ("s3://ci-data/runs/2024", "s3://ci-data/runs/2024/"):
        inner = unwrap(from_url(url), "runs/2024/")
        assert isinstance(inner, S3Storage) and inner.bucket == "ci-data"
    assert isinstance(from_url("s3://ci-data/"), S3Storage)
    # as written, like the AWS CLI: no %-decoding of the prefix
    assert unwrap(from_url("s3://b/a%20b"), "a%20b/")


def test_s3_options() -> None:
    storage = from_url(
        "s3://b",
        endpoint="http://127.0.0.1:9000",
        region="us-east-2",
        access_key="a",
        secret_key="s",
        session_token="t",
        retries=2,
        backoff=0.5,
        timeout=7,
        part_size=8 << 20,
        prefix="p/q",
    )
    inner = unwrap(storage, "p/q/")
    assert isinstance(inner, S3Storage)
    assert inner._settings == {
        "endpoint": "127.0.0.1:9000",
        "access_key": "a",
        "secret_key": "s",
        "session_token": "t",
        "secure": False,
        "region": "us-east-2",
    }
    assert (inner.retries, inner.backoff, inner.timeout, inner.part_size) == (2, 0.5, 7, 8 << 20)


def test_options_in_the_query() -> None:
    storage = from_url(
        "s3://b?endpoint=https://h:9443&region=eu-west-1&retries=1&backoff=0&timeout=2.5"
        "&part_size=6291456&prefix=x/y"
    )
    inner = unwrap(storage, "x/y/")
    assert isinstance(inner, S3Storage)
    assert (inner.endpoint, inner._settings["secure"], inner._settings["region"]) == (
        "h:9443",
        True,
        "eu-west-1",
    )
    assert (inner.retries, inner.backoff, inner.timeout, inner.part_size) == (1, 0.0, 2.5, 6291456)


def test_file_url(tmp_path: Path) -> None:
    root = tmp_path / "a store"
    posix = from_url(f"file://{tmp_path}/a%20store")
    assert isinstance(posix, PosixStorage) and posix.root == str(root)
    posix.close()
    local = from_url(f"file://localhost{root}")
    assert isinstance(local, PosixStorage) and local.root == str(root)
    local.close()
    for storage in (from_url(f"file://{root}?prefix=sub/dir"), from_url(f"file://{root}", prefix="sub/dir")):
        with storage:
            inner = unwrap(storage, "sub/dir/")
            storage.write("k", b"v")
            assert (root / "data" / "sub" / "dir" / "k").read_bytes() == b"v"
            assert isinstance(inner, PosixStorage) and inner.root == str(root)


def test_memory_url() -> None:
    assert isinstance(from_url("memory://"), MemoryStorage)
    assert isinstance(unwrap(from_url("memory://?prefix=p"), "p/"), MemoryStorage)
    assert isinstance(unwrap(from_url("memory://", prefix="p/"), "p/"), MemoryStorage)
    assert from_url("memory://") is not from_url("memory://")


@pytest.mark.parametrize(
    ("url", "options", "named"),
    [
        ("ftp://host/x", {}, "'ftp'"),
        ("posix:///x", {}, "'posix'"),
        ("/srv/store", {}, "file:///absolute/path"),
        ("", {}, "''"),
        (b"s3://b", {}, "bytes"),
        ("s3://", {}, "bucket"),
        ("s3:///prefix", {}, "bucket"),
        ("s3://b@d/x", {}, "user name or password"),
        ("s3://b_a!d", {}, "'b_a!d'"),
        ("s3://b", {"regoin": "x"}, "unknown option(s): regoin"),
        ("s3://b", {"path": "/x"}, "unknown option(s): path"),
        ("s3://b", {"location": "eu-west-1"}, "unknown option(s): location"),
        ("s3://b?regoin=x", {}, "regoin"),
        ("s3://b#frag", {}, "fragment"),
        ("s3://b?retries=1&retries=2", {}, "'retries' is given twice"),
        ("s3://b?retries=1", {"retries": 2}, "both in the URL and as options: retries"),
        ("s3://b/p", {"prefix": "q"}, "prefix is given twice"),
        ("s3://b?prefix=q", {"prefix": "q"}, "prefix"),
        ("s3://b", {"endpoint": "http://h:port"}, "'endpoint'"),
        ("s3://b", {"endpoint": "h:9000"}, "'h:9000'"),
        ("s3://b", {"endpoint": "ftp://h"}, "'ftp'"),
        ("s3://b?endpoint=http://h:99999", {}, "'endpoint'"),
        ("s3://b", {"timeout": -1}, "option 'timeout'"),
        ("s3://b", {"timeout": 0}, "option 'timeout'"),
        ("s3://b?timeout=soon", {}, "option 'timeout' is a number of seconds, over 0, not 'soon'"),
        ("s3://b?timeout=nan", {}, "option 'timeout'"),
        ("s3://b", {"backoff": -0.5}, "option 'backoff'"),
        ("s3://b", {"retries": "3"}, "option 'retries' is an int of at least 0, not '3'"),
        ("s3://b", {"retries": 2.0}, "option 'retries'"),
        ("s3://b", {"retries": True}, "option 'retries'"),
        ("s3://b?retries=-1", {}, "option 'retries'"),
        ("s3://b", {"part_size": 1024}, "option 'part_size'"),
        ("s3://b", {"region": "eu west"}, "option 'region'"),
        ("s3://b", {"region": 5}, "option 'region' is a string"),
        ("s3://b", {"profile": ""}, "option 'profile' is empty"),
        ("s3://b", {"access_key": "a"}, "secret_key"),
        ("s3://b", {"session_token": "t"}, "access_key"),
        ("s3://b/a/../c", {}, "'a/../c'"),
        ("s3://b//a", {}, "prefix"),
        ("s3://b", {"prefix": "../up"}, "option 'prefix'"),
        ("s3://b", {"prefix": "a/./b"}, "option 'prefix'"),
        ("s3://b", {"prefix": ""}, "option 'prefix' is empty"),
        ("file://host/srv", {}, "'host'"),
        ("file:relative/path", {}, "absolute path"),
        ("file:///srv?region=x", {}, "unknown option(s): region"),
        ("file:///srv", {"prefix": "a/../b"}, "option 'prefix'"),
        ("file:///srv", {"prefix": "a//b"}, "option 'prefix'"),
        ("memory://x", {}, "'memory://x'"),
        ("memory:///x", {}, "'memory:///x'"),
        ("memory://", {"endpoint": "http://h"}, "unknown option(s): endpoint"),
    ],
)
def test_refused(url: Any, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_url(url, **options)
    assert named in str(caught.value)


def test_credentials_never_go_in_a_url() -> None:
    for url in ("s3://b?secret_key=hunter2", "s3://b?access_key=AKIA", "s3://b?session_token=tok"):
        with pytest.raises(ConfigError, match="do not go in a URL") as caught:
            from_url(url)
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="user name or password") as caught:
        from_url("s3://AKIA:hunter2@bucket")
    assert "hunter2" not in str(caught.value)
    for url in (
        "https://AKIA:hunter2@bucket",  # another error first: the URL is shown without its secrets
        "https://bucket?secret_key=hunter2",
        "s3://b?retries=1&retries=2&secret_key=hunter2",
        "s3://b#x?secret_key=hunter2",
    ):
        with pytest.raises(ConfigError) as caught:
            from_url(url)
        assert "hunter2" not in str(caught.value)


def test_bad_prefix_makes_no_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        from_url(f"file://{tmp_path}/never?prefix=../up")
    assert not (tmp_path / "never").exists()


def test_from_config_takes_a_url(tmp_path: Path) -> None:
    storage = from_config({"url": f"file://{tmp_path}", "prefix": "p"})
    with storage:
        assert isinstance(unwrap(storage, "p/"), PosixStorage)
    remote = from_config({"url": "s3://b/runs", "location": "eu-west-1", "retries": 1})
    inner = unwrap(remote, "runs/")
    assert isinstance(inner, S3Storage) and inner._settings["region"] == "eu-west-1" and inner.retries == 1
    with pytest.raises(ConfigError, match="unknown field\\(s\\): regoin"):
        from_config({"url": "s3://b", "regoin": "x"})
    with pytest.raises(ConfigError, match="field 'retries'"):
        from_config({"url": "s3://b", "retries": "3"})
    with pytest.raises(ConfigError, match="not both"):
        from_config({"url": "s3://b", "type": "s3"})
    with pytest.raises(ConfigError, match="a str, not int"):
        from_config({"url": 5})


def test_s3_url_reaches_the_server(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_bucket()
    scheme = "https" if s3_endpoint.secure else "http"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"{scheme}://{s3_endpoint.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret_key)
    if s3_endpoint.region:
        monkeypatch.setenv("AWS_REGION", s3_endpoint.region)
    with from_url(f"s3://{bucket}/runs/1") as storage:
        storage.write("log", b"hello")
        assert storage.read_bytes("log") == b"hello"
        assert list(storage.list_keys()) == ["log"]
    with s3_endpoint.storage(bucket) as whole:
        assert list(whole.list_keys()) == ["runs/1/log"]
        settings = dict(storage.storage._settings)  # type: ignore[attr-defined]
        again = S3Storage(settings.pop("endpoint"), bucket, **settings)
        assert again.read_bytes("runs/1/log") == b"hello"
