"""Checks of what users send: run configs and run groups."""

from __future__ import annotations

import re

from ..caches import CacheGroup, cache_group_for_direct_run, cache_group_for_project
from ..errors import InvalidIdError
from ..ids import check_id
from .errors import BadRequestError
from .model import RunConfig, StepKind

_GROUP = re.compile(r"/(project|user)/([^/]+)/(branch|pr)/(.+)")


def check_group(group: str, repo_uuid: str = "") -> CacheGroup:
    """Validate a run group; the cache group its runs use.

    ``/project/<id>/branch/<name>`` and ``/project/<id>/pr/<n>`` share the project's
    caches; ``/user/<id>/branch/<name>`` (a direct run) shares the caches of the user's
    runs from the same local repository, ``repo_uuid``.
    """
    match = _GROUP.fullmatch(group)
    if not match:
        raise BadRequestError(
            f"run group {group!r} is not /project/<id>/branch/<name>, /project/<id>/pr/<n>"
            " or /user/<id>/branch/<name>"
        )
    owner, owner_id, kind, name = match.groups()
    try:
        if owner == "project":
            if kind == "pr" and not name.isdigit():
                raise BadRequestError(f"pull request number {name!r} is not a number")
            return cache_group_for_project(owner_id)
        if kind != "branch":
            raise BadRequestError(f"a user's direct run belongs to a branch, not {kind!r}")
        if not repo_uuid:
            raise BadRequestError("a user's direct run names its local repository (repo_uuid)")
        return cache_group_for_direct_run(owner_id, repo_uuid)
    except InvalidIdError as exc:
        raise BadRequestError(str(exc)) from exc


def check_run_config(config: RunConfig) -> None:
    """Raise ``BadRequestError`` naming the first problem of a run config."""
    if not config.tasks:
        raise BadRequestError("a run config has at least one task")
    names: set[str] = set()
    for task in config.tasks:
        try:
            check_id("task name", task.name)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        if task.name in names:
            raise BadRequestError(f"task name {task.name!r} is used twice")
        names.add(task.name)
        if not task.steps:
            raise BadRequestError(f"task {task.name!r} has no step")
        for number, step in enumerate(task.steps):
            where = f"step {number} of task {task.name!r}"
            if step.kind is StepKind.RUN and not step.command:
                raise BadRequestError(f"{where} runs a command but has none")
            if step.kind in (StepKind.SAVE_TO_WORKSPACE, StepKind.SAVE_CACHE) and not step.paths:
                raise BadRequestError(f"{where} saves but names no path")
            if step.kind in (StepKind.SAVE_CACHE, StepKind.RESTORE_CACHE):
                if not step.keys:
                    raise BadRequestError(f"{where} needs a cache key")
                for key in step.keys:
                    try:
                        check_id("cache key", key, 200)
                    except InvalidIdError as exc:
                        raise BadRequestError(f"{where}: {exc}") from exc
    for task in config.tasks:
        for parent in task.depends:
            if parent not in names:
                raise BadRequestError(f"task {task.name!r} depends on unknown task {parent!r}")
    _check_acyclic(config)


def _check_acyclic(config: RunConfig) -> None:
    parents = {task.name: task.depends for task in config.tasks}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise BadRequestError(f"tasks depend on each other in a cycle: {' -> '.join((*path, name))}")
        if name in done:
            return
        for parent in parents[name]:
            visit(parent, (*path, name))
        done.add(name)

    for name in parents:
        visit(name, ())
