"""Caches that the runs of one cache group share: first writer wins, prefix restore."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import BinaryIO

import attrs

from objstore import AlreadyExistsError, Data, NotExistError, ObjectInfo, Storage
from runstore.cache_groups import CacheGroup, check_cache_key
from runstore.clock import now
from runstore.errors import InvalidIdError

CACHES = "caches/"
"""The folder of every cache group's folder."""
_SUFFIX = ".tar"


@attrs.frozen
class StoredCache:
    """A cache as :meth:`CacheStore.infos` lists it: its key, size in bytes and creation time."""

    key: str
    size: int
    created: datetime


@attrs.frozen
class RestoredCache:
    """A cache found by :meth:`CacheStore.restore`: its key and an open stream of its tar."""

    key: str
    stream: BinaryIO


class CacheStore:
    """The caches of one group, as ``caches/<group>/<key>.tar`` objects.

    The group's caches are exactly the objects directly in its folder: keys have no "/",
    and every listing stays in that folder, so no key or prefix reaches another group.
    A cache's age counts from its creation: caches are written once and never touched
    by a restore.
    """

    def __init__(self, storage: Storage, group: CacheGroup) -> None:
        if not isinstance(group, CacheGroup):
            raise InvalidIdError("cache group", group, "a cache group is a CacheGroup")
        self._storage = storage
        self.group = group
        self._prefix = f"{CACHES}{group.path}/"

    def _object_key(self, key: str) -> str:
        return self._prefix + check_cache_key(key) + _SUFFIX

    def _key_of(self, object_key: str) -> str | None:
        """The cache key of an object of the group's folder; None if it is no cache."""
        if not (object_key.startswith(self._prefix) and object_key.endswith(_SUFFIX)):
            return None
        try:
            return check_cache_key(object_key[len(self._prefix) : -len(_SUFFIX)])
        except InvalidIdError:
            return None

    def _caches(self, prefix: str = "") -> list[tuple[str, ObjectInfo]]:
        """The group's caches whose key starts with ``prefix``: (key, info), in key order."""
        found = []
        for entry in self._storage.list(self._prefix + prefix, recursive=False):
            if isinstance(entry, ObjectInfo):
                key = self._key_of(entry.key)
                if key is not None and key.startswith(prefix):  # the object of "deps" matches "deps.t"
                    found.append((key, entry))
        return found

    def save(self, key: str, data: Data) -> bool:
        """Store a cache unless one with ``key`` exists; whether this call stored it."""
        object_key = self._object_key(key)
        if self._storage.exists(object_key):
            return False
        try:
            self._storage.write(object_key, data, if_none_match=True)
        except AlreadyExistsError:
            return False
        return True

    def restore(self, keys: list[str]) -> RestoredCache | None:
        """Open the first cache that matches one of ``keys``, in order.

        For each key, an exact match wins, else the newest of the group's caches whose
        key starts with it. None if nothing matches.
        """
        for key in keys:
            object_key = self._object_key(key)
            try:
                return RestoredCache(key, self._storage.read(object_key))
            except NotExistError:
                pass
            newest_first = sorted(
                self._caches(key), key=lambda found: (found[1].last_modified, found[0]), reverse=True
            )
            for found_key, info in newest_first:
                try:
                    stream = self._storage.read(info.key)
                except NotExistError:
                    continue  # expired meanwhile
                return RestoredCache(found_key, stream)
        return None

    def delete(self, key: str) -> None:
        """Delete a cache; a missing one is not an error."""
        self._storage.delete(self._object_key(key))

    def delete_many(self, keys: list[str] | None = None) -> list[str]:
        """Delete the caches of ``keys`` (None: every cache of the group); the keys of those
        that existed, sorted. ``InvalidIdError`` naming the first key that is not a cache key,
        before anything is deleted."""
        wanted = None if keys is None else {check_cache_key(key) for key in keys}
        doomed = sorted((key, info.key) for key, info in self._caches() if wanted is None or key in wanted)
        self._storage.delete_many(object_key for _, object_key in doomed)
        return [key for key, _ in doomed]

    def infos(self) -> list[StoredCache]:
        """The group's caches, sorted by key."""
        found = sorted(self._caches(), key=lambda cache: cache[0])
        return [StoredCache(key, info.size, info.last_modified) for key, info in found]

    def keys(self) -> list[str]:
        """The keys of the group's caches, sorted."""
        keys = []
        for entry in self._storage.list_keys(self._prefix, recursive=False):
            key = self._key_of(entry) if isinstance(entry, str) else None
            if key is not None:
                keys.append(key)
        return sorted(keys)

    def expire(self, older_than: timedelta) -> int:
        """Delete the caches created more than ``older_than`` ago; how many."""
        if older_than < timedelta(0):
            raise InvalidIdError("age", older_than, "an age is not negative")
        limit = now() - older_than
        old = [info.key for _, info in self._caches() if info.last_modified < limit]
        self._storage.delete_many(old)
        return len(old)
