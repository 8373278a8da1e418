"""``python -m runstore executor``: the executor's options, and running it until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from types import FrameType

from runstore.contract.auth import Role, TokenBook, TokenError, read_secret
from runstore.contract.http.server import add_listen_argument
from runstore.executor.executor import Executor, check_advertise_url
from runstore.executor.task import DEFAULT_TASK_UIDS, check_task_uids

TOKEN_VARIABLE = "RUNSTORE_EXECUTOR_TOKEN"
"""The environment variable of the executor's own token, without ``--token-file``."""
RUNSERVICE_TOKENS_VARIABLE = "RUNSTORE_RUNSERVICE_TOKENS"
"""The environment variable of the runservice tokens the executor accepts (without
``--runservice-tokens-file``)."""


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 1")
    return int(text)


def _advertise_url(text: str) -> str:
    try:
        return check_advertise_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _task_uids(text: str) -> range:
    match = re.fullmatch(r"([0-9]+)-([0-9]+)", text)
    try:
        if match is None:
            raise ValueError(f"task uids are FIRST-LAST, e.g. 200000-299999, not {text!r}")
        return check_task_uids(range(int(match[1]), int(match[2]) + 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor's command-line options (``python -m runstore executor``)."""
    parser.add_argument("--runservice", required=True, metavar="URL", help="the runservice's base URL")
    parser.add_argument("--data", required=True, metavar="DIR", help="where the tasks' files go")
    parser.add_argument("--id", required=True, help="the executor's id")
    parser.add_argument("--limit", type=_limit, default=2, metavar="N", help="tasks run at once (2)")
    add_listen_argument(parser, 0)
    parser.add_argument(
        "--advertise-url",
        type=_advertise_url,
        metavar="URL",
        help="the URL the runservice reaches it at (default: that of --listen)",
    )
    first, last = DEFAULT_TASK_UIDS.start, DEFAULT_TASK_UIDS[-1]
    parser.add_argument(
        "--task-uids",
        type=_task_uids,
        default=DEFAULT_TASK_UIDS,
        metavar="FIRST-LAST",
        help=f"as root, the uids tasks run as, one a task, no accounts ({first}-{last})",
    )
    tokens = parser.add_argument_group("tokens (never on the command line: from files or the environment)")
    tokens.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"the executor's own token, presented to the runservice (default: ${TOKEN_VARIABLE})",
    )
    tokens.add_argument(
        "--runservice-tokens-file",
        metavar="FILE",
        help="the runservice's tokens it accepts, whitespace-separated"
        f" (default: ${RUNSERVICE_TOKENS_VARIABLE})",
    )
    tokens.add_argument(
        "--no-tokens", action="store_true", help="present and ask for no token (a trusted network only)"
    )
    parser.add_argument(
        "--shared-user",
        action="store_true",
        help="run every task as the executor's user, --limit at once, not isolated from each other "
        "(default: as root each task as a uid of its own, else one task at a time)",
    )


def _tokens(args: argparse.Namespace) -> tuple[str | None, TokenBook | None]:
    """The executor's own token and the runservice's it accepts; ``TokenError`` if one is
    missing and ``--no-tokens`` was not given."""
    if args.no_tokens:
        return None, None
    token = read_secret(args.token_file, TOKEN_VARIABLE)
    accepted = read_secret(args.runservice_tokens_file, RUNSERVICE_TOKENS_VARIABLE)
    if token is None or accepted is None:
        raise TokenError(
            f"give the executor's token (--token-file or ${TOKEN_VARIABLE}) and the runservice's"
            f" (--runservice-tokens-file or ${RUNSERVICE_TOKENS_VARIABLE}), or --no-tokens"
        )
    return token, TokenBook.of(Role.RUNSERVICE, accepted.split())


def run(args: argparse.Namespace) -> int:
    """Run an executor until SIGTERM or SIGINT; print ``LISTENING <url>`` once it serves."""
    host, port = args.listen
    try:
        token, accepted = _tokens(args)
        executor = Executor(
            args.runservice,
            args.data,
            executor_id=args.id,
            active_tasks_limit=args.limit,
            host=host,
            port=port,
            advertise_url=args.advertise_url,
            shared_user=args.shared_user,
            task_uids=args.task_uids,
            token=token,
            runservice_tokens=accepted,
        )
    except (ValueError, OSError) as exc:
        print(f"executor: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    executor.start()
    try:
        print(f"LISTENING {executor.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        executor.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m runstore executor`` (also ``python -m runstore.executor.cli``)."""
    parser = argparse.ArgumentParser(
        prog="runstore executor",
        description="Run an executor of the run service until SIGTERM or SIGINT.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
