"""``runstore runs list|show|restart|cancel|delete``: the runs of a runservice."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from runstore.clock import now
from runstore.commands.arguments import count, run_id
from runstore.commands.connection import OK
from runstore.commands.output import fields, print_json, span, step_title, table, when
from runstore.contract.clients import RunServiceClient
from runstore.contract.model import Run, RunPage, RunPhase, RunResult, StepState, TaskStatus

LIST_HEADERS = ("ID", "GROUP", "PHASE", "RESULT", "CREATED", "DURATION", "TASKS")
TASK_HEADERS = ("TASK / STEP", "STATUS", "START", "END", "DURATION", "EXIT")


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
) -> None:
    """``runs`` and its actions."""
    runs = commands.add_parser("runs", allow_abbrev=False, help="list, show, restart, cancel and delete runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        allow_abbrev=False,
        parents=[connection, output],
        help="the runs, newest first",
        description="The runs, newest first.",
    )
    listing.add_argument(
        "--group", default="", metavar="PREFIX", help="only the runs whose group starts with PREFIX"
    )
    listing.add_argument(
        "--phase", choices=[phase.value for phase in RunPhase], help="only the runs in this phase"
    )
    listing.add_argument(
        "--result", choices=[result.value for result in RunResult], help="only the runs with this result"
    )
    listing.add_argument(
        "--limit", type=count, metavar="N", help="runs a page (1 to 500; default: the runservice's, 50)"
    )
    listing.add_argument(
        "--cursor", default="", metavar="C", help="go on from cursor C (the one printed after a page)"
    )
    listing.add_argument("--all", action="store_true", help="every page, following the cursors")
    listing.set_defaults(handler=list_runs)

    for name, handler, text in (
        ("show", show_run, "a run's fields and its tasks' steps"),
        ("restart", restart_run, "run a finished run again, sharing its successful tasks"),
        ("cancel", cancel_run, "cancel an unfinished run: it finishes as stopped"),
        ("delete", delete_run, "delete a finished run (its tasks' data once no run shares it)"),
    ):
        parents = [connection, output] if name == "show" else [connection]
        action = actions.add_parser(
            name,
            allow_abbrev=False,
            parents=parents,
            help=text,
            description=text[:1].upper() + text[1:] + ".",
        )
        action.add_argument("run", type=run_id, metavar="RUN", help="the run's id")
        action.set_defaults(handler=handler)


def list_runs(client: RunServiceClient, args: argparse.Namespace) -> int:
    """A page of runs (every page with ``--all``) as a table or JSON; the next page's cursor on stderr."""
    runs: list[Run] = []
    cursor = args.cursor
    while True:
        page = client.list_runs(
            group_prefix=args.group,
            phase=RunPhase(args.phase) if args.phase else None,
            result=RunResult(args.result) if args.result else None,
            limit=args.limit,
            cursor=cursor,
        )
        runs.extend(page.runs)
        cursor = page.next
        if not (args.all and cursor):
            break
    if args.json:
        print_json(RunPage(runs, cursor))
    else:
        sys.stdout.write(runs_table(runs))
    if cursor:
        print(f"runstore: more runs follow: --cursor {cursor}", file=sys.stderr)
    return OK


def runs_table(runs: list[Run]) -> str:
    """The table of ``runs list``."""
    current = now()
    return table(
        LIST_HEADERS,
        [
            (
                run.id,
                run.group,
                run.phase.value,
                run.result.value,
                when(run.creation_time),
                span(run.start_time, run.end_time, current),
                f"{sum(task.status.finished for task in run.tasks)}/{len(run.tasks)}",
            )
            for run in runs
        ],
    )


def show_run(client: RunServiceClient, args: argparse.Namespace) -> int:
    """A run's fields and its tasks' table, or the run as JSON."""
    run = client.get_run(args.run)
    if args.json:
        print_json(run)
    else:
        sys.stdout.write(run_details(run))
    return OK


def run_details(run: Run) -> str:
    """What ``runs show`` prints: the run's fields, its tasks and their steps, the tasks' errors."""
    current = now()
    pairs = [
        ("id", run.id),
        ("group", run.group),
        ("cache group", run.cache_group),
        ("phase", run.phase.value),
        ("result", run.result.value),
        ("created", when(run.creation_time)),
        ("started", when(run.start_time)),
        ("ended", when(run.end_time)),
        ("duration", span(run.start_time, run.end_time, current)),
    ]
    if run.restarted_from:
        pairs.append(("restarts", run.restarted_from))
    for flag, shown in (("cancelled", run.cancelled), ("being deleted", run.deleting)):
        if shown:
            pairs.append((flag, "yes"))
    rows: list[tuple[str, ...]] = []
    for task in run.tasks:
        status = task.status.value + (", shared" if task.shared else "")
        rows.append((task.name, status, *_times(task.start_time, task.end_time, current), ""))
        states = task.step_states + [StepState()] * (len(task.steps) - len(task.step_states))
        for index, (step, state) in enumerate(zip(task.steps, states, strict=False)):
            exit_code = "" if state.exit_code is None else str(state.exit_code)
            times = _times(state.start_time, state.end_time, current)
            rows.append((f"  {step_title(index, step)}", state.phase.value, *times, exit_code))
    errors = "".join(f"{task.name}: {task.error}\n" for task in run.tasks if task.error)
    return fields(pairs) + "\n" + table(TASK_HEADERS, rows) + ("\n" + errors if errors else "")


def _times(start: datetime | None, end: datetime | None, current: datetime) -> tuple[str, str, str]:
    """A start, an end, and the time between (to ``current`` if it has not ended)."""
    return when(start), when(end), span(start, end, current)


def restart_run(client: RunServiceClient, args: argparse.Namespace) -> int:
    """Restart a finished run; the new run's id."""
    run = client.restart_run(args.run)
    shared = sum(task.shared for task in run.tasks)
    print(f"restarted {args.run} as {run.id} ({shared} of {len(run.tasks)} tasks shared)")
    return OK


def cancel_run(client: RunServiceClient, args: argparse.Namespace) -> int:
    """Cancel an unfinished run; what becomes of its tasks."""
    run = client.cancel_run(args.run)
    running = sum(task.status is TaskStatus.RUNNING for task in run.tasks)
    cancelled = sum(task.status is TaskStatus.CANCELLED for task in run.tasks)
    print(
        f"cancelled {run.id}: {running} running task(s) being stopped, {cancelled} not started"
        " task(s) cancelled; it finishes as stopped"
    )
    return OK


def delete_run(client: RunServiceClient, args: argparse.Namespace) -> int:
    """Delete a finished run."""
    client.delete_run(args.run)
    print(f"deleted {args.run}")
    return OK
