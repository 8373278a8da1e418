"""The fsspec bridge made from options (``store_url`` and ``from_url``'s), as pandas and dask make it."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest

from objstore import ConfigError, InvalidArgumentError, MemoryStorage, PrefixedStorage, S3Storage
from objstore._fsspec_cache import SequentialReadahead
from objstore.fsspec import ObjstoreFileSystem
from tests import s3env
from tests.conftest import S3Endpoint


def s3_options(endpoint: S3Endpoint, bucket: str, prefix: str = "") -> dict[str, Any]:
    """The storage options of a bridge to ``s3://bucket/prefix`` on the test server."""
    return {
        "store_url": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
        "endpoint": f"{'https' if endpoint.secure else 'http'}://{endpoint.endpoint}",
        "access_key": endpoint.access_key,
        "secret_key": endpoint.secret_key,
        "region": endpoint.region or "us-east-1",
    }


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"run": [1, 2, 3], "passed": [40, 41, 42], "name": ["a", "b", "c"]})


# -- building the store ----------------------------------------------------------------


def test_a_url_builds_the_store_with_from_url(tmp_path: Path) -> None:
    fs = fsspec.filesystem("objstore", store_url=f"file://{tmp_path}", prefix="store")
    assert isinstance(fs.storage, PrefixedStorage) and fs.storage.prefix == "store/"
    fs.pipe("logs/1.txt", b"hello")
    assert (tmp_path / "data" / "store" / "logs" / "1.txt").read_bytes() == b"hello"
    assert ObjstoreFileSystem(store_url=f"file://{tmp_path}?prefix=store").cat("logs/1.txt") == b"hello"


def test_pandas_reads_and_writes_parquet_by_url(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], frame: pd.DataFrame
) -> None:
    bucket = s3_bucket()
    options = s3_options(s3_endpoint, bucket, "tables")
    frame.to_parquet("objstore://runs.parquet", storage_options=options)
    with s3_endpoint.storage(bucket) as storage:
        assert [info.key for info in storage.list()] == ["tables/runs.parquet"]
    back = pd.read_parquet("objstore://runs.parquet", columns=["passed"], storage_options=options)
    assert back["passed"].tolist() == [40, 41, 42]
    pd.testing.assert_frame_equal(pd.read_parquet("objstore://runs.parquet", storage_options=options), frame)


def test_pandas_reads_csv_by_url(tmp_path: Path, frame: pd.DataFrame) -> None:
    options = {"store_url": f"file://{tmp_path}"}
    frame.to_csv("objstore://runs.csv", index=False, storage_options=options)
    pd.testing.assert_frame_equal(pd.read_csv("objstore://runs.csv", storage_options=options), frame)


def test_s3_settings_come_from_the_aws_environment(
    s3_endpoint: S3Endpoint,
    s3_bucket: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bucket = s3_bucket()
    s3env.use_test_server(monkeypatch, tmp_path, s3_endpoint)
    with fsspec.open("objstore://a/b.txt", "wb", store_url=f"s3://{bucket}") as file:
        file.write(b"from the environment")
    fs, path = fsspec.core.url_to_fs("objstore://a/b.txt", store_url=f"s3://{bucket}")
    assert isinstance(fs.storage, S3Storage) and fs.storage.bucket == bucket
    assert fs.cat(path) == b"from the environment"


def test_fsspec_options_stay_with_fsspec() -> None:
    """``from_url`` refuses unknown options: the fsspec ones never reach it."""
    fs = ObjstoreFileSystem(
        store_url="memory://",
        block_size=1000,
        cache_type="bytes",
        cache_options={"trim": False},
        use_listings_cache=False,
        listings_expiry_time=1,
        max_paths=10,
    )
    fs.pipe("k", bytes(3000))
    with fs.open("k") as file:
        assert (file.blocksize, file.cache.name) == (1000, "bytes")
    with fs.open("k", block_size=100, cache_type="none") as file:
        assert (file.blocksize, file.cache.name) == (100, "none")


def test_files_read_through_the_bridges_cache_by_default() -> None:
    fs = ObjstoreFileSystem(MemoryStorage())
    fs.pipe("k", b"data")
    with fs.open("k") as file:
        assert isinstance(file.cache, SequentialReadahead) and file.blocksize == 5 << 20
    with fs.open("k", cache_type="readahead") as file:
        assert file.cache.name == "readahead"


# -- identity and pickling -----------------------------------------------------------------


def test_never_cached_across_stores(tmp_path: Path) -> None:
    first = fsspec.filesystem("objstore", store_url="memory://")
    second = fsspec.filesystem("objstore", store_url="memory://")
    assert first is not second and first.storage is not second.storage
    first.pipe("k", b"only in the first")
    assert not second.exists("k")
    one, other = (ObjstoreFileSystem(store_url=f"file://{tmp_path}", prefix=name) for name in ("a", "b"))
    one.pipe("k", b"a")
    assert not other.exists("k")


def test_a_url_made_filesystem_pickles_by_its_options(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> None:
    bucket = s3_bucket()
    fs = ObjstoreFileSystem(**s3_options(s3_endpoint, bucket, "runs"), block_size=4096)
    fs.pipe("1/log", b"pickled")
    assert fs.storage_args == () and fs.storage_options["store_url"] == f"s3://{bucket}/runs"
    copy = pickle.loads(pickle.dumps(fs))  # by the constructor's arguments: the store is built again
    assert copy is not fs and copy.storage is not fs.storage
    assert isinstance(copy.storage, PrefixedStorage) and copy.storage.prefix == "runs/"
    assert copy.storage_options == fs.storage_options
    assert copy.block_size == 4096 and copy.cat("1/log") == b"pickled"
    copy.pipe("2/log", b"back")
    assert fs.cat("2/log") == b"back"


# -- bad options ---------------------------------------------------------------------------


def test_needs_exactly_one_of_storage_and_url() -> None:
    with pytest.raises(InvalidArgumentError, match=r"give storage .* or store_url"):
        ObjstoreFileSystem()
    with pytest.raises(InvalidArgumentError, match="not both"):
        ObjstoreFileSystem(MemoryStorage(), store_url="memory://")
    with pytest.raises(InvalidArgumentError, match=r"not str \(a URL goes in store_url\)"):
        ObjstoreFileSystem("memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="access_key, region are store options"):
        ObjstoreFileSystem(MemoryStorage(), region="us-east-1", access_key="key")


def test_bad_store_options_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*: acess_key"):
        ObjstoreFileSystem(store_url="s3://bucket", acess_key="key")
    with pytest.raises(ConfigError, match="unknown scheme 'objstore'"):
        fsspec.filesystem("objstore", store_url="objstore://bucket")
    with pytest.raises(ConfigError, match="a storage URL is a str"):
        ObjstoreFileSystem(store_url=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="option 'retries'"):
        ObjstoreFileSystem(store_url="s3://bucket", endpoint="http://127.0.0.1:9", retries=-1)
    with pytest.raises(ConfigError, match=r"unknown option.*: cache"):
        pd.read_csv("objstore://x.csv", storage_options={"store_url": "memory://", "cache": "none"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"block_size": 0}, "block_size is a number of bytes"),
        ({"block_size": "big"}, "block_size is a number of bytes"),
        ({"cache_type": "nonsense"}, "cache_type is one of fsspec's caches"),
        ({"cache_options": "trim"}, "cache_options is a dict"),
    ],
)
def test_bad_fsspec_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ObjstoreFileSystem(store_url="memory://", **options)
