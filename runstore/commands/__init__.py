"""The client commands of ``runstore`` (``runs``, ``logs``, ``gc``, ``caches``): HTTP calls to a
running runservice through :class:`RunServiceClient`, never the store itself.

Nothing here imports objstore or the run store (``tests/test_runstore_cli.py`` checks it).
"""

from __future__ import annotations

import argparse

from runstore.commands import caches, gc, logs, runs
from runstore.commands.connection import connection_options
from runstore.commands.output import json_option

NAMES = ("runs", "logs", "gc", "caches")
"""The client commands, as ``add_commands`` adds them."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to a command line's subcommands."""
    connection = connection_options()
    output = json_option()
    runs.add_parser(commands, connection, output)
    logs.add_parser(commands, connection)
    gc.add_parser(commands, connection, output)
    caches.add_parser(commands, connection, output)
