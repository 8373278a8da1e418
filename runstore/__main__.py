"""``python -m runstore``: the demo (the main job), the runservice and the executor."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import timedelta

from runstore.contract.errors import LeaseHeldError
from runstore.contract.http import add_listen_argument


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


def runservice(args: argparse.Namespace) -> int:
    from objstore import PosixStorage  # (here: the executor's process never imports objstore)
    from runstore.runservice.api import serve
    from runstore.runservice.service import RunService

    service = RunService(PosixStorage(args.store), executor_timeout=args.executor_timeout)
    host, port = args.listen
    try:
        server = serve(service, host, port, wait_for_lease=args.wait)
    except LeaseHeldError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
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
    demo_parser.add_argument(
        "--store", default="./runstore-data", help="store folder (default ./runstore-data)"
    )
    service_parser = commands.add_parser("runservice", help="serve the runservice over a posix store")
    service_parser.add_argument("--store", default="./runstore-data")
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
