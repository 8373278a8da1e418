"""fsspec's own abstract test suite against the bridge, over every backend."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import fsspec
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from objstore import FsspecStorage, InvalidArgumentError, Storage
from objstore.fsspec import ObjstoreFileSystem
from tests.conftest import BACKENDS, FSSPEC_FILESYSTEMS

BRIDGED = [*BACKENDS, *(f"fsspec-{filesystem}" for filesystem in FSSPEC_FILESYSTEMS)]


@pytest.fixture(params=BRIDGED)
def backend(request: pytest.FixtureRequest) -> str:
    """The backends of conftest, and ``FsspecStorage`` over fsspec's memory and local filesystems."""
    return str(request.param)


# The documented differences (docs/fsspec.md) that make an abstract test fail, by test.
CONDITIONAL_WRITES = (
    "FsspecStorage cannot write conditionally, so the bridge refuses 'xb' and mode='create' on it: "
    "docs/fsspec.md, 'Differences from a local filesystem'"
)
NEEDS_CONDITIONAL_WRITES = {"test_open_exclusive", "test_pipe_exclusive"}


class ObjstoreFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture(autouse=True)
    def known_differences(self, request: pytest.FixtureRequest, fs: ObjstoreFileSystem) -> None:
        """Mark the tests that a documented difference makes fail, for the reason it gives."""
        name = request.node.originalname
        if name in NEEDS_CONDITIONAL_WRITES and not fs.storage.supports_conditional_writes:
            request.applymarker(
                pytest.mark.xfail(raises=InvalidArgumentError, strict=True, reason=CONDITIONAL_WRITES)
            )

    @pytest.fixture
    def fs(
        self,
        backend: str,
        request: pytest.FixtureRequest,
        make_fsspec_storage: Callable[[str], FsspecStorage],
    ) -> ObjstoreFileSystem:
        if backend.startswith("fsspec-"):
            storage: Storage = make_fsspec_storage(backend.removeprefix("fsspec-"))
        else:
            storage = request.getfixturevalue("storage")
        fs = fsspec.filesystem("objstore", storage=storage)
        assert isinstance(fs, ObjstoreFileSystem)
        return fs

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return "abstract"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class TestCopy(AbstractCopyTests, ObjstoreFixtures):  # type: ignore[misc]
    pass


class TestGet(AbstractGetTests, ObjstoreFixtures):  # type: ignore[misc]
    pass


class TestPut(AbstractPutTests, ObjstoreFixtures):  # type: ignore[misc]
    pass


class TestPipe(AbstractPipeTests, ObjstoreFixtures):  # type: ignore[misc]
    pass


class TestOpen(AbstractOpenTests, ObjstoreFixtures):  # type: ignore[misc]
    pass
