"""Cache groups (whose runs share caches) and cache keys: values and their rules, without storage."""

from __future__ import annotations

import attrs

from runstore.errors import InvalidIdError
from runstore.ids import check_id

MAX_CACHE_KEY_LENGTH = 200
_GROUP_RULE = 'a cache group is "projects/<id>", "users/<id>/repos/<repository uuid>" or "groups/<name>"'


def check_cache_key(key: object) -> str:
    """Return ``key`` if it is a cache key: an id (see ``check_id``) of at most 200 characters."""
    return check_id("cache key", key, MAX_CACHE_KEY_LENGTH)


def _group_ids(parts: list[str]) -> list[tuple[str, str]] | None:
    """The ids in the parts of a cache group's path, each with its kind; None if no shape fits."""
    match parts:
        case ["projects", project_id]:
            return [("project id", project_id)]
        case ["groups", name]:
            return [("cache group name", name)]
        case ["users", user_id, "repos", repo_uuid]:
            return [("user id", user_id), ("repository uuid", repo_uuid)]
    return None


def _check_group_path(_instance: object, _attribute: object, path: str) -> None:
    """Refuse a path that is not one of the three shapes of a cache group."""
    if not isinstance(path, str):
        raise InvalidIdError("cache group", path, f"a cache group is a str, not {type(path).__name__}")
    ids = _group_ids(path.split("/"))
    if ids is None:
        raise InvalidIdError("cache group", path, _GROUP_RULE)
    for kind, value in ids:
        try:
            check_id(kind, value)
        except InvalidIdError as exc:
            raise InvalidIdError("cache group", path, exc.rule) from exc


@attrs.frozen
class CacheGroup:
    """Whose runs share caches; ``path`` is its folder under ``caches/``.

    ``path`` is ``projects/<project id>``, ``users/<user id>/repos/<repository uuid>`` or
    ``groups/<name>``, each id as ``check_id`` allows; anything else raises
    ``InvalidIdError``. No group's folder is inside another's.
    """

    path: str = attrs.field(validator=_check_group_path)

    @classmethod
    def named(cls, name: str) -> CacheGroup:
        """An explicit group that several projects may share."""
        return cls(f"groups/{check_id('cache group name', name)}")

    @classmethod
    def of(cls, group: CacheGroup | str) -> CacheGroup:
        """``group`` itself, or the explicit group a str names (see :meth:`named`)."""
        return group if isinstance(group, CacheGroup) else cls.named(group)


def cache_group_for_project(project_id: str) -> CacheGroup:
    """The group every run of a project shares."""
    return CacheGroup(f"projects/{check_id('project id', project_id)}")


def cache_group_for_direct_run(user_id: str, repo_uuid: str) -> CacheGroup:
    """The group of a user's direct runs from one local repository.

    Direct runs from different repositories never share caches.
    """
    return CacheGroup(f"users/{check_id('user id', user_id)}/repos/{check_id('repository uuid', repo_uuid)}")
