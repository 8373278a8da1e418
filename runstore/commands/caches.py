"""``runstore caches list|delete``: the caches of the cache groups of a runservice's store."""

from __future__ import annotations

import argparse
import sys

from runstore.commands.arguments import cache_group, cache_key
from runstore.commands.connection import OK, CommandError
from runstore.commands.output import print_json, size, table, when
from runstore.contract.clients import RunServiceClient
from runstore.contract.model import CacheGroupCaches

GROUPS_HEADERS = ("GROUP", "CACHES", "SIZE")
CACHES_HEADERS = ("KEY", "SIZE", "CREATED")
_GROUP_HELP = "a cache group: projects/<id>, users/<id>/repos/<uuid> or groups/<name>"


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
) -> None:
    """``caches`` and its actions."""
    caches = commands.add_parser(
        "caches", allow_abbrev=False, help="list and delete the caches of cache groups"
    )
    actions = caches.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        allow_abbrev=False,
        parents=[connection, output],
        help="every cache group with its caches' count and size, or a group's caches",
        description="Without GROUP, every cache group with its caches' count and size;"
        " with GROUP, its caches: key, size and creation time.",
    )
    listing.add_argument("group", type=cache_group, metavar="GROUP", nargs="?", help=_GROUP_HELP)
    listing.set_defaults(handler=list_caches)
    delete = actions.add_parser(
        "delete",
        allow_abbrev=False,
        parents=[connection],
        help="delete caches of a group (all of them without KEY)",
        description="Delete the caches KEY ... of GROUP, or every cache of GROUP without KEY. On a"
        " terminal it asks first; elsewhere it needs --yes.",
    )
    delete.add_argument("group", type=cache_group, metavar="GROUP", help=_GROUP_HELP)
    delete.add_argument(
        "keys", type=cache_key, metavar="KEY", nargs="*", help="a cache key (default: every cache of GROUP)"
    )
    delete.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    delete.set_defaults(handler=delete_caches)


def list_caches(client: RunServiceClient, args: argparse.Namespace) -> int:
    """The cache groups, or a group's caches, as a table or JSON."""
    groups = client.list_caches(args.group)
    if args.json:
        print_json(groups)
    elif args.group is None:
        sys.stdout.write(groups_table(groups))
    else:
        sys.stdout.write(caches_table(groups[0]) if groups else table(CACHES_HEADERS, []))
    return OK


def groups_table(groups: list[CacheGroupCaches]) -> str:
    """The table of ``caches list``: each group, its count of caches and their bytes."""
    return table(
        GROUPS_HEADERS,
        [
            (group.group, str(len(group.caches)), size(sum(cache.size for cache in group.caches)))
            for group in groups
        ],
    )


def caches_table(group: CacheGroupCaches) -> str:
    """The table of ``caches list GROUP``: each cache's key, size and creation time."""
    return table(
        CACHES_HEADERS, [(cache.key, size(cache.size), when(cache.created)) for cache in group.caches]
    )


def delete_caches(client: RunServiceClient, args: argparse.Namespace) -> int:
    """Delete caches once confirmed (``--yes``, or an answer on a terminal); how many went."""
    keys: list[str] = list(dict.fromkeys(args.keys))
    if not args.yes:
        _confirm(client, args.group, keys)
    deleted = client.delete_caches(args.group, keys)
    missing = [key for key in keys if key not in deleted.keys]
    print(
        f"deleted {len(deleted.keys)} cache(s) of {deleted.group}"
        + (f"; not found: {', '.join(missing)}" if missing else "")
    )
    return OK


def _confirm(client: RunServiceClient, group: str, keys: list[str]) -> None:
    """Ask on the terminal whether to delete; ``CommandError`` unless the answer is yes."""
    if not sys.stdin.isatty():
        raise CommandError(
            f"not deleting caches of {group} without asking, and stdin is not a terminal to ask on:"
            " pass --yes to delete them"
        )
    if keys:
        question = f"delete {len(keys)} cache(s) of {group} ({', '.join(keys)})?"
    else:
        (listed,) = client.list_caches(group)
        total = size(sum(cache.size for cache in listed.caches))
        question = f"delete every cache of {group}: {len(listed.caches)} cache(s), {total}?"
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError("nothing deleted")
