"""Fixtures: fresh stores of every backend, and the S3 server they talk to.

S3 tests use a moto server that the session starts on 127.0.0.1. To run them against
another S3 endpoint (MinIO, AWS), set:

- ``OBJSTORE_TEST_S3_ENDPOINT``: URL of the server, e.g. ``http://127.0.0.1:9000``
- ``OBJSTORE_TEST_S3_ACCESS_KEY`` and ``OBJSTORE_TEST_S3_SECRET_KEY``
- ``OBJSTORE_TEST_S3_REGION`` (optional)

Every test makes and removes its own buckets, named ``objstore-test-<random>``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attrs
import boto3
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import HealthCheck, settings
from minio import Minio

from objstore import FsspecStorage, MemoryStorage, S3Storage, Storage
from objstore.posix import PosixStorage
from objstore.posixflat import PosixFlatStorage
from tests import s3server
from tests.faultproxy import FaultProxy

pytest.register_assert_rewrite("objstore.testing")  # its checks fail with pytest's detailed messages

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("default")

BACKENDS = ["posix", "posixflat", "s3", "memory"]


@attrs.frozen
class S3Endpoint:
    """Where the S3 tests send their requests."""

    endpoint: str
    secure: bool
    access_key: str
    secret_key: str
    region: str | None

    def client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
        )

    def boto(self) -> Any:
        """A boto3 client of the endpoint: another S3 client, for what minio and objstore do not do."""
        scheme = "https" if self.secure else "http"
        return boto3.client(
            "s3",
            endpoint_url=f"{scheme}://{self.endpoint}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region or "us-east-1",
        )

    def storage(self, bucket: str, **options: object) -> S3Storage:
        return S3Storage(
            self.endpoint,
            bucket,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    url = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
    if url:
        parts = urlsplit(url)
        yield S3Endpoint(
            endpoint=parts.netloc,
            secure=parts.scheme == "https",
            access_key=os.environ["OBJSTORE_TEST_S3_ACCESS_KEY"],
            secret_key=os.environ["OBJSTORE_TEST_S3_SECRET_KEY"],
            region=os.environ.get("OBJSTORE_TEST_S3_REGION"),
        )
        return
    server = s3server.start()
    try:
        yield S3Endpoint(server.endpoint, False, s3server.ACCESS_KEY, s3server.SECRET_KEY, "us-east-1")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[Callable[[], str]]:
    """A factory of fresh buckets, all removed when the test ends."""
    client = s3_endpoint.client()
    made: list[str] = []

    def make() -> str:
        name = f"objstore-test-{secrets.token_hex(6)}"
        client.make_bucket(name)
        made.append(name)
        return name

    yield make
    for name in made:
        with s3_endpoint.storage(name) as storage:
            storage.delete_many(entry.key for entry in storage.list())
        client.remove_bucket(name)


StorageFactory = Callable[[], Storage]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_storage(backend: str, request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    """A factory of fresh, empty stores of the test's backend."""
    made: list[Storage] = []
    folders: list[str] = []

    def make() -> Storage:
        storage: Storage
        if backend == "memory":
            storage = MemoryStorage()
        elif backend == "s3":
            endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
            bucket = request.getfixturevalue("s3_bucket")()
            storage = endpoint.storage(bucket, part_size=5 << 20)
        else:
            folder = tempfile.mkdtemp(prefix="objstore-test-")
            folders.append(folder)
            storage = PosixStorage(folder) if backend == "posix" else PosixFlatStorage(folder)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.close()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def storage(make_storage: StorageFactory) -> Storage:
    """A fresh, empty store of the test's backend."""
    return make_storage()


FSSPEC_FILESYSTEMS = ["memory", "local"]


def fresh_memory_fs() -> MemoryFileSystem:
    """An fsspec memory filesystem with a store of its own (by default, instances share one)."""
    fs = MemoryFileSystem(skip_instance_cache=True)
    fs.store, fs.pseudo_dirs = {}, [""]
    return fs


@pytest.fixture
def make_fsspec_storage(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], FsspecStorage]:
    """A factory of fresh, empty ``FsspecStorage`` stores over fsspec's "memory" or "local" filesystem."""

    def make(filesystem: str) -> FsspecStorage:
        if filesystem == "memory":
            return FsspecStorage(fresh_memory_fs(), "/store")
        return FsspecStorage(LocalFileSystem(), str(tmp_path_factory.mktemp("fsspec-local")))

    return make


@pytest.fixture
def fault_proxy(s3_endpoint: S3Endpoint) -> Iterator[FaultProxy]:
    """A started fault-injecting proxy in front of the S3 server, with no faults planned yet."""
    if s3_endpoint.secure:
        pytest.skip(
            "OBJSTORE_TEST_S3_ENDPOINT is https: the plain-HTTP fault proxy cannot front a TLS endpoint"
        )
    with FaultProxy(s3_endpoint.endpoint) as proxy:
        yield proxy


ProxiedStorageFactory = Callable[..., S3Storage]


@pytest.fixture
def proxied_storage(
    fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> Iterator[ProxiedStorageFactory]:
    """A factory ``(**options) -> S3Storage`` of stores of fresh buckets, reached through ``fault_proxy``.

    The bucket is made (and removed) on the S3 server directly, so no fault touches that.
    """
    made: list[S3Storage] = []

    def make(**options: object) -> S3Storage:
        storage = S3Storage(
            fault_proxy.endpoint,
            s3_bucket(),
            access_key=s3_endpoint.access_key,
            secret_key=s3_endpoint.secret_key,
            secure=False,
            region=s3_endpoint.region,
            **options,  # type: ignore[arg-type]
        )
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.close()
