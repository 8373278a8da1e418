"""runstore: the data layer of a CI run service, built on objstore."""

from .cache_groups import CacheGroup, cache_group_for_direct_run, cache_group_for_project
from .caches import CacheStore, RestoredCache
from .errors import InvalidIdError, RunstoreError
from .sharing import CollectReport
from .store import RunStore

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
