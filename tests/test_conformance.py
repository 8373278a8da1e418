"""The conformance suite (``objstore.testing``) against every backend of this project."""

from __future__ import annotations

import pytest
from hypothesis import settings

from objstore.testing import Capabilities, StorageSuite, conformance_settings
from tests.conftest import StorageFactory

EXAMPLES = {"posix": 200, "posixflat": 200, "s3": 60, "memory": 200}


class TestConformance(StorageSuite):
    @pytest.fixture
    def make_storage(self, make_storage: StorageFactory) -> StorageFactory:
        return make_storage  # conftest's, parametrized over the backends

    @pytest.fixture
    def capabilities(self, backend: str, make_storage: StorageFactory) -> Capabilities:
        return Capabilities.of(make_storage(), tree=backend == "posix")

    @pytest.fixture
    def conformance_settings(self, backend: str) -> settings:
        return conformance_settings(max_examples=EXAMPLES[backend])
