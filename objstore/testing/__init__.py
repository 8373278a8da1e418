"""The conformance suite of objstore, for any backend (needs the test extra: hypothesis, pytest).

Random operations run on fresh stores and on a simple in-memory model, and every result
must agree; :class:`Capabilities` says what a backend can do, so that the suite checks
exactly that. Run it from pytest by subclassing :class:`StorageSuite`, or directly with
:func:`check_storage`. ``docs/backends.md`` shows both.
"""

from .capabilities import Capabilities
from .counting import CountingStorage
from .machine import StorageFactory, StoreComparison, check_storage, conformance_settings
from .model import StoreModel
from .suite import ChecksSkipped, StorageSuite

__all__ = [
    "Capabilities",
    "ChecksSkipped",
    "CountingStorage",
    "StorageFactory",
    "StorageSuite",
    "StoreComparison",
    "StoreModel",
    "check_storage",
    "conformance_settings",
]
