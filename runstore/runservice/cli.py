"""``python -m runstore runservice``: its options, and serving until SIGTERM or SIGINT.

Nothing here imports objstore until the runservice starts (the executor's process parses
its command line through the same ``runstore`` entry point, and never imports objstore).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from runstore.contract.auth import Role, TokenBook, TokenError, TokenFile, Tokens, book_of
from runstore.contract.errors import LeaseHeldError
from runstore.contract.http.server import add_listen_argument

if TYPE_CHECKING:
    from objstore import Storage

DEFAULT_STORE = "./runstore-data"
TOKENS_VARIABLE = "RUNSTORE_TOKENS"
"""The environment variable whose text is the runservice's tokens file, without ``--tokens``."""
#: A ``--store`` that starts with a scheme and "//" (or is ``s3:...``, ``file:...``) is a URL.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<slashes>//)?")
_DAY = 86400.0


def _duration(unit: float, name: str, *, zero: bool = False) -> Callable[[str], timedelta | None]:
    """A parser of a number of ``name`` (``unit`` seconds each) above 0 (or 0: None, with ``zero``)."""

    def parse(text: str) -> timedelta | None:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if zero and value == 0:
            return None
        if not value > 0 or value * unit > timedelta.max.total_seconds():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number of {name} above 0{' (or 0)' if zero else ''}"
            )
        return timedelta(seconds=value * unit)

    return parse


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runservice's command-line options."""
    store = parser.add_mutually_exclusive_group()
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
    add_listen_argument(parser, 8000)
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--tokens",
        metavar="FILE",
        help=f"the tokens file (lines '<role> <name> <token>'; read again when it changes);"
        f" default: the text of ${TOKENS_VARIABLE}",
    )
    tokens.add_argument(
        "--no-tokens",
        action="store_true",
        help="accept every request without a token (a trusted network only)",
    )
    parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit at once if another runservice owns the store",
    )
    seconds = _duration(1.0, "seconds")
    parser.add_argument(
        "--executor-timeout",
        type=seconds,
        default=timedelta(seconds=30),
        metavar="SECONDS",
        help="how long an executor may stay silent before it is gone (30)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=seconds,
        default=timedelta(seconds=15),
        metavar="SECONDS",
        help="how long the store's lease lasts unless renewed; the runservice stops writing a third"
        " of it before (15)",
    )
    parser.add_argument(
        "--sweep-every",
        type=seconds,
        default=timedelta(seconds=300),
        metavar="SECONDS",
        help="how often the store is read again for what no event announces (300); the runservice"
        " otherwise acts on events, from memory",
    )
    parser.add_argument(
        "--collect-every",
        type=_duration(1.0, "seconds", zero=True),
        default=timedelta(hours=1),
        metavar="SECONDS",
        help="how often garbage is collected and the retention policy applied (3600; 0: never)",
    )
    parser.add_argument(
        "--grace",
        type=seconds,
        default=timedelta(hours=1),
        metavar="SECONDS",
        help="how old what crashed writers left must be before it is collected (3600)",
    )
    parser.add_argument(
        "--cache-ttl",
        type=_duration(_DAY, "days", zero=True),
        default=timedelta(days=14),
        metavar="DAYS",
        help="delete caches created longer ago (14; 0: keep them)",
    )
    parser.add_argument(
        "--keep-days",
        type=_duration(_DAY, "days"),
        metavar="DAYS",
        help="delete finished runs older than this (default: keep them)",
    )
    parser.add_argument(
        "--keep-last",
        type=_count,
        metavar="N",
        help="delete the finished runs of a group after its newest N (default: keep them)",
    )


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


def run(args: argparse.Namespace) -> int:
    """Serve the runservice until SIGTERM or SIGINT (0), or until its lease is lost (1)."""
    from objstore import ConfigError, ObjstoreError  # (here: the executor's process never imports objstore)
    from runstore.runservice.api import serve
    from runstore.runservice.collector import Retention
    from runstore.runservice.service import RunService

    try:
        storage = open_store(args.store, args.store_config)
    except ConfigError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
    try:
        tokens = _tokens(args)
    except TokenError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
    stop = _signalled()  # before anything starts: a signal from here on stops it gracefully
    service = RunService(
        storage,
        executor_timeout=args.executor_timeout,
        lease_ttl=args.lease_ttl,
        sweep_interval=args.sweep_every,
        collect_interval=args.collect_every,
        grace=args.grace,
        cache_ttl=args.cache_ttl,
        retention=Retention(max_age=args.keep_days, keep_last=args.keep_last),
        runservice_token=book_of(tokens).first(Role.RUNSERVICE) if tokens is not None else None,
    )
    host, port = args.listen
    try:
        server = serve(service, host, port, wait_for_lease=args.wait, tokens=tokens)
    except LeaseHeldError as exc:
        print(f"runservice: {exc}", file=sys.stderr)
        return 2
    except ObjstoreError as exc:
        print(f"runservice: the store failed: {exc}", file=sys.stderr)
        return 1
    print(f"LISTENING {server.url}", flush=True)
    while not stop.wait(0.2) and not service.lost.is_set():
        pass
    stopped = stop.is_set()
    server.stop()  # no new request; the ones under way end
    service.stop()  # the loops' passes end, then the lease is released
    if not stopped:
        print("runservice: the store's lease was lost to another runservice", file=sys.stderr)
        return 1
    return 0


def _tokens(args: argparse.Namespace) -> Tokens | None:
    """The tokens the runservice takes: its ``--tokens`` file, else ${TOKENS_VARIABLE}'s text;
    ``TokenError`` if there are none and ``--no-tokens`` was not given."""
    if args.no_tokens:
        return None
    if args.tokens is not None:
        return TokenFile(args.tokens)
    text = os.environ.get(TOKENS_VARIABLE, "")
    if not text.strip():
        raise TokenError(
            f"no tokens: give --tokens FILE or ${TOKENS_VARIABLE} (docs/runservice.md, 'Tokens and roles'),"
            " or --no-tokens on a trusted network"
        )
    return TokenBook.parse(text, f"${TOKENS_VARIABLE}")


def _signalled() -> threading.Event:
    """An event that SIGTERM and SIGINT set from now on."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
