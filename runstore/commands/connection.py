"""The runservice a client command talks to (``--url``, its token, ``--timeout``), and what
becomes of the command's errors: one line on stderr and exit code 1 (argparse's usage errors
are 2)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import urllib3

from runstore.contract.auth import TokenError, read_secret
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError, ServiceError
from runstore.contract.http.client import UnreachableError

URL_VARIABLE = "RUNSTORE_URL"
"""The environment variable of the runservice's URL, without ``--url``."""
TOKEN_VARIABLE = "RUNSTORE_TOKEN"
"""The environment variable of the client token, without ``--token-file``."""
DEFAULT_URL = "http://127.0.0.1:8000"
"""The runservice's URL without ``--url`` or ``$RUNSTORE_URL``: its default listen address."""
DEFAULT_TIMEOUT = 30.0
FOLLOW_TIMEOUT = 30.0
"""The least time a read of a followed log (``logs --follow``) waits: the runservice ends a
follow answer after 20 s without a new byte, and a shorter wait would break the follow off."""
OK, FAILED = 0, 1

Handler = Callable[[RunServiceClient, argparse.Namespace], int]
"""What a client command does with the runservice's client and its arguments; its exit code."""


class CommandError(Exception):
    """An error a command finds itself (not the runservice): its message is printed, exit code 1."""


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL such as {DEFAULT_URL}")
    return text.rstrip("/")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def connection_options() -> argparse.ArgumentParser:
    """The parent parser of the options every client command takes."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("the runservice (the token never on the command line)")
    group.add_argument(
        "--url",
        type=_url,
        default=os.environ.get(URL_VARIABLE) or DEFAULT_URL,
        help=f"the runservice's URL (default: ${URL_VARIABLE}, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a file holding the client token (default: ${TOKEN_VARIABLE})",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long each read of an answer may wait ({DEFAULT_TIMEOUT:g}; connecting: 5)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a client command (``args.handler``) against the runservice at ``args.url``; its exit
    code, or 1 after one line on stderr for an error that it raised."""
    handler: Handler = args.handler
    try:
        token = read_secret(args.token_file, TOKEN_VARIABLE)
    except TokenError as exc:
        return fail(str(exc))
    timeout = max(args.timeout, FOLLOW_TIMEOUT) if getattr(args, "follow", False) else args.timeout
    client = RunServiceClient(args.url, token=token, timeout=timeout)
    try:
        return handler(client, args)
    except RemoteServiceError as exc:
        return fail(_refused(exc, args, token is not None))
    except UnreachableError as exc:
        return fail(f"cannot reach the runservice at {args.url}: {_reason(exc, timeout)}")
    except ServiceError as exc:  # a malformed answer: not a runservice, or not this version
        return fail(exc.message)
    except CommandError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return FAILED
    finally:
        client.close()


def fail(message: str) -> int:
    """Print ``runstore: <message>`` on one line of stderr; exit code 1."""
    print(f"runstore: {' '.join(message.splitlines())}", file=sys.stderr)
    return FAILED


def _token_source(args: argparse.Namespace) -> str:
    return f"--token-file {args.token_file}" if args.token_file is not None else f"${TOKEN_VARIABLE}"


def _refused(exc: RemoteServiceError, args: argparse.Namespace, has_token: bool) -> str:
    """What an error answer means to the user: the server's message, and for a token refused,
    which token and where to give one."""
    where = f"the runservice at {args.url}"
    if exc.kind is ErrorKind.UNAUTHORIZED and not has_token:
        return f"{where} needs a client token: give --token-file FILE or set ${TOKEN_VARIABLE}"
    if exc.kind is ErrorKind.UNAUTHORIZED:
        return f"{where} does not know the token of {_token_source(args)} (a wrong or revoked token)"
    if exc.kind is ErrorKind.FORBIDDEN:
        return f"{where} refused the token of {_token_source(args)}: {exc.remote_message}"
    if not exc.remote_message.strip():
        return f"{where} answered {exc.status} ({exc.kind.value}) without a message: is it a runservice?"
    if exc.kind is ErrorKind.INTERNAL:
        return f"{where} failed: {exc.remote_message}"
    return exc.remote_message


def _reason(exc: ServiceError, timeout: float) -> str:
    """Why no answer came: the socket's error ("connection refused"), or a timeout."""
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
    if any(isinstance(cause, (TimeoutError, urllib3.exceptions.TimeoutError)) for cause in causes):
        return f"no answer within {timeout:g} s"
    return exc.message
