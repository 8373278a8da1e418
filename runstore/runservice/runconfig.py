"""Checks of what users send: run configs and run groups."""

from __future__ import annotations

import re

from runstore.cache_groups import (
    CacheGroup,
    cache_group_for_direct_run,
    cache_group_for_project,
    check_cache_key,
)
from runstore.contract import codec
from runstore.contract.errors import BadRequestError
from runstore.contract.model import RunConfig, StepKind
from runstore.errors import InvalidIdError
from runstore.ids import check_id

_GROUP = re.compile(r"/(project|user)/([^/]+)/(branch|pr)/(.+)")

# What one run may hold (docs/runservice.md, "Limits"); a config over any is a 400.
MAX_TASKS = 500
"""Tasks in a run."""
MAX_STEPS = 100
"""Steps in a task."""
MAX_DEPENDENCIES = 20_000
"""Dependencies in a run, all tasks together (every one of 200 tasks on all earlier ones fits)."""
MAX_CONFIG_BYTES = 512 << 10
"""A run config as compact JSON (``codec.dumps``): this bounds the run document too."""


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
    """Raise ``BadRequestError`` naming the first problem of a run config.

    Its size is checked first (see the ``MAX_*`` limits), then each task, then the
    dependencies; every check is linear in the size of the config.
    """
    if not config.tasks:
        raise BadRequestError("a run config has at least one task")
    if len(config.tasks) > MAX_TASKS:
        raise BadRequestError(
            f"a run has at most {MAX_TASKS} tasks (the task limit), not {len(config.tasks)}"
        )
    dependencies = sum(len(task.depends) for task in config.tasks)
    if dependencies > MAX_DEPENDENCIES:
        raise BadRequestError(
            f"a run has at most {MAX_DEPENDENCIES} dependencies in all (the dependency limit),"
            f" not {dependencies}"
        )
    size = len(codec.dumps(config))
    if size > MAX_CONFIG_BYTES:
        raise BadRequestError(
            f"a run config has at most {MAX_CONFIG_BYTES} bytes as compact JSON (the size limit), not {size}"
        )
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
        if len(task.steps) > MAX_STEPS:
            raise BadRequestError(
                f"a task has at most {MAX_STEPS} steps (the step limit); {task.name!r} has {len(task.steps)}"
            )
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
                        check_cache_key(key)
                    except InvalidIdError as exc:
                        raise BadRequestError(f"{where}: {exc}") from exc
    for task in config.tasks:
        parents: set[str] = set()
        for parent in task.depends:
            if parent not in names:
                raise BadRequestError(f"task {task.name!r} depends on unknown task {parent!r}")
            if parent in parents:
                raise BadRequestError(f"task {task.name!r} depends on {parent!r} twice")
            parents.add(parent)
    _check_acyclic(config)


def _check_acyclic(config: RunConfig) -> None:
    """Raise ``BadRequestError`` naming a cycle of dependencies, if there is one.

    An iterative depth-first walk that reads each task's ``depends`` once: linear in tasks
    plus dependencies, at any depth.
    """
    parents = {task.name: task.depends for task in config.tasks}
    done: set[str] = set()
    for root in parents:
        if root in done:
            continue
        path = [root]  # the walk's current path, each task depending on the next
        on_path = {root}
        stack = [iter(parents[root])]
        while stack:
            for parent in stack[-1]:
                if parent in on_path:
                    cycle = [*path[path.index(parent) :], parent]
                    raise BadRequestError(f"tasks depend on each other in a cycle: {' -> '.join(cycle)}")
                if parent not in done:
                    path.append(parent)
                    on_path.add(parent)
                    stack.append(iter(parents[parent]))
                    break
            else:
                stack.pop()
                name = path.pop()
                on_path.discard(name)
                done.add(name)
