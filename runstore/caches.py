"""Caches that the runs of one cache group share: first writer wins, prefix restore."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import BinaryIO

import attrs

from objstore import AlreadyExistsError, Data, NotExistError, ObjectInfo, Storage

from .errors import InvalidIdError
from .ids import check_id

MAX_CACHE_KEY_LENGTH = 200
_SUFFIX = ".tar"


@attrs.frozen
class CacheGroup:
    """Whose runs share caches; ``path`` is its place under ``caches/``."""

    path: str

    @classmethod
    def named(cls, name: str) -> CacheGroup:
        """An explicit group that several projects may share."""
        return cls(f"groups/{check_id('cache group', name)}")


def cache_group_for_project(project_id: str) -> CacheGroup:
    """The group every run of a project shares."""
    return CacheGroup(f"projects/{check_id('project id', project_id)}")


def cache_group_for_direct_run(user_id: str, repo_uuid: str) -> CacheGroup:
    """The group of a user's direct runs from one local repository.

    Direct runs from different repositories never share caches.
    """
    return CacheGroup(f"users/{check_id('user id', user_id)}/repos/{check_id('repository uuid', repo_uuid)}")


@attrs.frozen
class RestoredCache:
    """A cache found by :meth:`CacheStore.restore`: its key and an open stream of its tar."""

    key: str
    stream: BinaryIO


class CacheStore:
    """The caches of one group, as ``caches/<group>/<key>.tar`` objects.

    A cache's age counts from its creation: caches are written once and never touched
    by a restore.
    """

    def __init__(self, storage: Storage, group: CacheGroup) -> None:
        self._storage = storage
        self.group = group
        self._prefix = f"caches/{group.path}/"

    def _object_key(self, key: str) -> str:
        return self._prefix + check_id("cache key", key, MAX_CACHE_KEY_LENGTH) + _SUFFIX

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

        For each key, an exact match wins, else the newest cache whose key starts with
        it. None if nothing matches.
        """
        for key in keys:
            object_key = self._object_key(key)
            try:
                return RestoredCache(key, self._storage.read(object_key))
            except NotExistError:
                pass
            candidates = [
                entry
                for entry in self._storage.list(object_key[: -len(_SUFFIX)])
                if isinstance(entry, ObjectInfo) and entry.key.endswith(_SUFFIX)
            ]
            for info in sorted(candidates, key=lambda info: (info.last_modified, info.key), reverse=True):
                try:
                    stream = self._storage.read(info.key)
                except NotExistError:
                    continue  # expired meanwhile
                return RestoredCache(info.key[len(self._prefix) : -len(_SUFFIX)], stream)
        return None

    def delete(self, key: str) -> None:
        """Delete a cache; a missing one is not an error."""
        self._storage.delete(self._object_key(key))

    def keys(self) -> list[str]:
        """The keys of the group's caches, in order."""
        return [
            entry[len(self._prefix) : -len(_SUFFIX)]
            for entry in self._storage.list_keys(self._prefix, recursive=False)
            if isinstance(entry, str) and entry.endswith(_SUFFIX)
        ]

    def expire(self, older_than: timedelta) -> int:
        """Delete the caches created more than ``older_than`` ago; how many."""
        if older_than < timedelta(0):
            raise InvalidIdError("age", older_than, "an age is not negative")
        limit = datetime.now(timezone.utc) - older_than
        old = [
            entry.key
            for entry in self._storage.list(self._prefix, recursive=False)
            if isinstance(entry, ObjectInfo) and entry.key.endswith(_SUFFIX) and entry.last_modified < limit
        ]
        self._storage.delete_many(old)
        return len(old)
