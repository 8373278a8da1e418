"""runstore: the data layer of a CI run service, built on objstore.

Its names load on first use, so the executor, which imports only the storage-free parts
(ids, errors, cache groups, the service's documents and HTTP plumbing), never imports
objstore or the run store: it runs untrusted build code and holds no store credentials.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runstore.extras import installed_version

if TYPE_CHECKING:
    from runstore.cache_groups import CacheGroup, cache_group_for_direct_run, cache_group_for_project
    from runstore.caches import CacheStore, RestoredCache
    from runstore.errors import InvalidIdError, RunstoreError
    from runstore.sharing import CollectReport
    from runstore.store import RunStore

#: Each public name and the module that defines it.
_HOMES = {
    "CacheGroup": ".cache_groups",
    "CacheStore": ".caches",
    "CollectReport": ".sharing",
    "InvalidIdError": ".errors",
    "RestoredCache": ".caches",
    "RunStore": ".store",
    "RunstoreError": ".errors",
    "cache_group_for_direct_run": ".cache_groups",
    "cache_group_for_project": ".cache_groups",
}

__version__ = installed_version()

__all__ = [
    "CacheGroup",
    "CacheStore",
    "CollectReport",
    "InvalidIdError",
    "RestoredCache",
    "RunStore",
    "RunstoreError",
    "cache_group_for_direct_run",
    "cache_group_for_project",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runstore' has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
