"""``python -m runstore``: the demo (the main job), the runservice and the executor."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from objstore import PosixStorage

from .service.errors import LeaseHeldError


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def runservice(args: argparse.Namespace) -> int:
    from .service.api import serve
    from .service.runservice import RunService

    service = RunService(PosixStorage(args.store))
    host, port = _listen(args.listen)
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
    parser = argparse.ArgumentParser(prog="python -m runstore")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run a pipeline, restart it, delete both runs")
    demo_parser.add_argument(
        "--store", default="./runstore-data", help="store folder (default ./runstore-data)"
    )
    service_parser = commands.add_parser("runservice", help="serve the runservice over a posix store")
    service_parser.add_argument("--store", default="./runstore-data")
    service_parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: a free one)")
    service_parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit at once if another runservice owns the store",
    )
    args = parser.parse_args(argv)
    level = logging.INFO if args.command == "runservice" else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    if args.command == "runservice":
        return runservice(args)
    from .demo import demo

    return demo(args.store)


if __name__ == "__main__":
    sys.exit(main())
