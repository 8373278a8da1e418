"""``runstore``: the demo (the main job), the runservice, the executor, and the client commands
of a running runservice (``runs``, ``logs``, ``gc``, ``caches``).

The client commands need only the base install; the others need the ``runservice`` extra,
and without it say so.
"""

from __future__ import annotations

import argparse
import logging
import sys

from runstore import commands as client_commands
from runstore.commands import connection
from runstore.extras import MissingExtraError

#: The commands that serve (or, for the demo, run servers in-process), and their help.
SERVING = {
    "demo": "run a pipeline, restart it, delete both runs",
    "runservice": "serve the runservice over a store",
    "executor": "run an executor: the tasks a runservice assigns it",
}


def _add_serving(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> MissingExtraError | None:
    """The serving commands; without their extra, only their names and the error."""
    try:
        from runstore.runservice import cli as runservice_cli  # noqa: I001 - its error names the runservice
        from runstore.executor import cli as executor_cli
    except MissingExtraError as exc:
        for name, text in SERVING.items():
            commands.add_parser(name, help=f"{text} (needs the 'runservice' extra)")
        return exc
    demo_parser = commands.add_parser("demo", help=SERVING["demo"])
    store = runservice_cli.DEFAULT_STORE
    demo_parser.add_argument("--store", default=store, help=f"store folder (default {store})")
    runservice_cli.add_arguments(commands.add_parser("runservice", help=SERVING["runservice"]))
    executor_cli.add_arguments(commands.add_parser("executor", help=SERVING["executor"]))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runstore")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    missing = _add_serving(commands)
    client_commands.add_commands(commands)
    words = sys.argv[1:] if argv is None else argv
    if missing is not None and words and words[0] in SERVING:
        print(f"runstore: {words[0]}: {missing}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if args.command in client_commands.NAMES:
        logging.basicConfig(level=logging.WARNING, format="runstore: %(message)s")
        return connection.run(args)
    if args.command == "executor":
        from runstore.executor import cli as executor_cli

        return executor_cli.run(args)  # it sets up its logging itself
    level = logging.INFO if args.command == "runservice" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "runservice":
        from runstore.runservice import cli as runservice_cli

        return runservice_cli.run(args)
    from runstore.demo import demo

    return demo(args.store)


if __name__ == "__main__":
    sys.exit(main())
