"""``runstore logs RUN TASK [STEP]``: a task's logs, as they are or as they are written.

With STEP (a step number or ``setup``) the log's bytes go to stdout unchanged; without, every
log the task has, in order (setup first), each under a header line ``==> setup <==`` or
``==> step 1 (run "tests") <==``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import BinaryIO

from runstore.commands.arguments import log_step, offset, run_id
from runstore.commands.connection import OK, CommandError
from runstore.commands.output import step_kind
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError
from runstore.contract.model import RunTask

_CHUNK = 1 << 16


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], connection: argparse.ArgumentParser
) -> None:
    """``logs``."""
    parser = commands.add_parser(
        "logs",
        allow_abbrev=False,
        parents=[connection],
        help="a task's logs: one step's bytes as they are, or all of them under headers",
        description="Write a task's logs to stdout: a STEP's bytes unchanged, or without STEP every log"
        " of the task in order (setup first), each under a header line such as '==> step 1 (run) <=='.",
    )
    parser.add_argument("run", type=run_id, metavar="RUN", help="the run's id")
    parser.add_argument("task", metavar="TASK", help="the task's name")
    parser.add_argument(
        "step", metavar="STEP", nargs="?", type=log_step, help='a step number (from 0) or "setup"'
    )
    parser.add_argument(
        "-f", "--follow", action="store_true", help="go on as the log is written, until its step ends"
    )
    parser.add_argument("--start", type=offset, default=0, metavar="N", help="from byte N of STEP's log (0)")

    def handler(client: RunServiceClient, args: argparse.Namespace) -> int:
        if args.start and args.step is None:
            parser.error("--start N needs a STEP")
        return write_logs(client, args, sys.stdout.buffer)

    parser.set_defaults(handler=handler)


def write_logs(client: RunServiceClient, args: argparse.Namespace, out: BinaryIO) -> int:
    """Write the log of ``args.step``, or every log of the task under headers, to ``out``."""
    if args.step is not None:
        for chunk in _chunks(client, args.run, args.task, args.step, args.follow, args.start):
            _write(out, chunk, args.follow)
        return OK
    run = client.get_run(args.run)
    try:
        task = run.task(args.task)
    except KeyError:
        raise CommandError(f"run {run.id!r} has no task {args.task!r}") from None
    written = 0
    for step, title in _logs_of(task):
        try:
            for number, chunk in enumerate(_chunks(client, run.id, task.name, step, args.follow, 0)):
                if number == 0:  # a header for the logs that exist only
                    separator = "\n" if written else ""
                    _write(out, f"{separator}==> {title} <==\n".encode(), args.follow)
                    written += 1
                _write(out, chunk, args.follow)
        except RemoteServiceError as exc:
            if exc.kind is not ErrorKind.NOT_EXIST or args.follow:
                raise  # (followed, a log not written yet is waited for: not_exist is the run's or task's)
            # not followed: a log that does not exist (a step that never ran) is left out
    if not written:
        raise CommandError(f"task {task.name!r} of run {run.id!r} has no log (yet)")
    return OK


def _logs_of(task: RunTask) -> list[tuple[int | str, str]]:
    """The task's logs in order, each with its header's title."""
    return [
        ("setup", "setup"),
        *((index, f"step {index} ({step_kind(step)})") for index, step in enumerate(task.steps)),
    ]


def _chunks(
    client: RunServiceClient, run_id: str, task_name: str, step: int | str, follow: bool, start: int
) -> Iterator[bytes]:
    """A log's bytes from ``start``: as far as they exist now, or followed until its step ends."""
    if follow:
        yield from client.follow_log(run_id, task_name, step, start=start)
        return
    with client.run_log(run_id, task_name, step, start=start) as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


def _write(out: BinaryIO, data: bytes, flush: bool) -> None:
    out.write(data)
    if flush:
        out.flush()
