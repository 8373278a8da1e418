"""``python -m runstore``: the demo (the main job), the runservice and the executor."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from runstore.contract.errors import LeaseHeldError
from runstore.contract.http import add_listen_argument

if TYPE_CHECKING:
    from objstore import Storage

DEFAULT_STORE = "./runstore-data"
#: A ``--store`` that starts with a scheme and "//" (or is ``s3:...``, ``file:...``) is a URL.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<slashes>//)?")


def _seconds(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return timedelta(seconds=seconds)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def open_store(store: str | None, config_file: str | None) -> Storage:
    """The store of ``--store`` (a URL, or a bare path: a posix folder) or of ``--store-config``
    (a JSON file of :func:`objstore.from_config`'s mapping); ``ConfigError`` naming the cause."""
    from objstore import ConfigError, PosixStorage, from_config, from_url
    from objstore.config import SCHEMES

    if config_file is not None:
        try:
            with open(config_file, encoding="utf-8") as file:
                config = json.load(file)
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(f"cannot read the store configuration {config_file!r}: {reason}") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"the store configuration {config_file!r} is not JSON: {exc}") from exc
        try:
            return from_config(config)
        except ConfigError as exc:
            raise ConfigError(f"the store configuration {config_file!r}: {exc}") from exc
    store = DEFAULT_STORE if store is None else store
    url = _URL.match(store)
    if url is not None and (url["slashes"] or url["scheme"].lower() in SCHEMES):
        return from_url(store)
    try:
        return PosixStorage(store)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot use the folder {store!r} as a store: {exc}") from exc


def runservice(args: argparse.Namespace) -> int:
    from objstore import ConfigError, ObjstoreError  # (here: the executor's process never imports objstore)
    from runstore.runservice.api import serve
    from runstore.runservice.service import RunService

    try:
        storage = open_store(args.store, args.store_config)
    except ConfigError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
    service = RunService(storage, executor_timeout=args.executor_timeout)
    host, port = args.listen
    try:
        server = serve(service, host, port, wait_for_lease=args.wait)
    except LeaseHeldError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
    except ObjstoreError as exc:
        print(f"runservice: the store failed: {exc}", file=sys.stderr)
        return 1
    print(f"LISTENING {server.url}", flush=True)
    _wait_for_signal()
    server.stop()
    service.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    from runstore.executor import executor

    parser = argparse.ArgumentParser(prog="python -m runstore")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser("demo", help="run a pipeline, restart it, delete both runs")
    demo_parser.add_argument("--store", default=DEFAULT_STORE, help=f"store folder (default {DEFAULT_STORE})")
    service_parser = commands.add_parser("runservice", help="serve the runservice over a store")
    store = service_parser.add_mutually_exclusive_group()
    store.add_argument(
        "--store",
        metavar="URL",
        help=f"s3://bucket[/prefix], file:///path, or a folder (default {DEFAULT_STORE});"
        " S3 settings not in the URL come from the AWS_* variables",
    )
    store.add_argument(
        "--store-config",
        metavar="FILE",
        help='a JSON file of the store\'s configuration, e.g. {"url": "s3://bucket/prefix"}',
    )
    add_listen_argument(service_parser, 8000)
    service_parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit at once if another runservice owns the store",
    )
    service_parser.add_argument(
        "--executor-timeout",
        type=_seconds,
        default=timedelta(seconds=30),
        metavar="SECONDS",
        help="how long an executor may stay silent before it is gone (30)",
    )
    executor_parser = commands.add_parser(
        "executor", help="run an executor: the tasks a runservice assigns it"
    )
    executor.add_arguments(executor_parser)
    args = parser.parse_args(argv)
    if args.command == "executor":
        return executor.run(args)
    level = logging.INFO if args.command == "runservice" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "runservice":
        return runservice(args)
    from runstore.demo import demo

    return demo(args.store)


if __name__ == "__main__":
    sys.exit(main())
