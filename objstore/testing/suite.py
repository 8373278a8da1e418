"""The conformance suite as pytest tests, for any backend: subclass :class:`StorageSuite`."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import settings

from ..errors import AlreadyExistsError, InvalidArgumentError, NotExistError, PreconditionFailedError
from .capabilities import Capabilities
from .download import check_download
from .machine import StorageFactory, check_storage, conformance_settings, raises


class ChecksSkipped(UserWarning):
    """The capabilities of the backend under test turned some checks off."""


class StorageSuite:
    """The conformance tests; a subclass overrides the ``make_storage`` fixture.

    Override ``capabilities`` to declare a tree of keys (``Capabilities.of(storage,
    tree=True)``), and ``conformance_settings`` to run fewer or more examples. A check
    that the capabilities rule out is skipped, and a skip or a :class:`ChecksSkipped`
    warning says which and why.
    """

    @pytest.fixture
    def make_storage(self) -> StorageFactory:
        """A factory of fresh, empty stores of the backend under test."""
        raise NotImplementedError("override the make_storage fixture: it returns a factory of fresh stores")

    @pytest.fixture
    def capabilities(self, make_storage: StorageFactory) -> Capabilities:
        """What the backend declares (a flat namespace unless overridden)."""
        return Capabilities.of(make_storage())

    @pytest.fixture
    def conformance_settings(self) -> settings:
        """The hypothesis settings of the model comparison."""
        return conformance_settings()

    def test_matches_model(
        self, make_storage: StorageFactory, capabilities: Capabilities, conformance_settings: settings
    ) -> None:
        check_storage(make_storage, capabilities, settings=conformance_settings)
        for skipped in capabilities.skipped():
            warnings.warn(ChecksSkipped(f"not checked: {skipped}"), stacklevel=1)

    def test_conditional_writes(self, make_storage: StorageFactory, capabilities: Capabilities) -> None:
        storage = make_storage()
        if not capabilities.conditional_writes:
            with raises(InvalidArgumentError):
                storage.write("counter", b"0", if_none_match=True)
            etag = storage.write("counter", b"0")
            with raises(InvalidArgumentError):
                storage.write("counter", b"1", if_match=etag)
            assert storage.read_bytes("counter") == b"0"
            pytest.skip(f"{storage!r}: {capabilities.skipped()[0]}")
        first = storage.write("counter", b"0", if_none_match=True)
        with raises(AlreadyExistsError):
            storage.write("counter", b"1", if_none_match=True)
        second = storage.write("counter", b"1", if_match=first)
        assert second != first
        with raises(PreconditionFailedError):
            storage.write("counter", b"2", if_match=first)
        with raises(NotExistError):
            storage.write("missing", b"2", if_match=second)
        assert storage.read_bytes("counter") == b"1" and storage.stat("counter").etag == second
        assert not storage.exists("missing")

    def test_download(self, make_storage: StorageFactory, tmp_path: Path) -> None:
        """``download`` writes whole objects to local files atomically (``check_download``)."""
        check_download(make_storage(), tmp_path)
