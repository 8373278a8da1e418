"""``python -m runstore``: the demo (the main job), the runservice, the executor, and the client
commands of a running runservice (``runs``, ``logs``, ``gc``, ``caches``)."""

from __future__ import annotations

import argparse
import logging
import sys

from runstore import commands as client_commands
from runstore.commands import connection
from runstore.runservice import cli as runservice_cli

DEFAULT_STORE = runservice_cli.DEFAULT_STORE


def main(argv: list[str] | None = None) -> int:
    from runstore.executor import cli as executor_cli

    parser = argparse.ArgumentParser(prog="runstore")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="run a pipeline, restart it, delete both runs")
    demo_parser.add_argument("--store", default=DEFAULT_STORE, help=f"store folder (default {DEFAULT_STORE})")
    service_parser = commands.add_parser("runservice", help="serve the runservice over a store")
    runservice_cli.add_arguments(service_parser)
    executor_parser = commands.add_parser(
        "executor", help="run an executor: the tasks a runservice assigns it"
    )
    executor_cli.add_arguments(executor_parser)
    client_commands.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in client_commands.NAMES:
        logging.basicConfig(level=logging.WARNING, format="runstore: %(message)s")
        return connection.run(args)
    if args.command == "executor":
        return executor_cli.run(args)
    level = logging.INFO if args.command == "runservice" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "runservice":
        return runservice_cli.run(args)
    from runstore.demo import demo

    return demo(args.store)


if __name__ == "__main__":
    sys.exit(main())
