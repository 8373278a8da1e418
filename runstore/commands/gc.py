"""``runstore gc``: a pass of the runservice's collector, now."""

from __future__ import annotations

import argparse
import sys

from runstore.commands.connection import OK
from runstore.commands.output import fields, print_json
from runstore.contract.clients import RunServiceClient
from runstore.contract.model import CollectionReport


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    connection: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
) -> None:
    """``gc``."""
    text = (
        "run a pass of the runservice's garbage collection now (with its retention and --cache-ttl)"
        " and print what it removed"
    )
    parser = commands.add_parser(
        "gc",
        allow_abbrev=False,
        parents=[connection, output],
        help=text,
        description=text[:1].upper() + text[1:] + ".",
    )
    parser.set_defaults(handler=collect)


def collect(client: RunServiceClient, args: argparse.Namespace) -> int:
    """Ask for a pass; what it removed, as fields or JSON."""
    report = client.collect()
    if args.json:
        print_json(report)
    else:
        sys.stdout.write(report_fields(report))
    return OK


def report_fields(report: CollectionReport) -> str:
    """What ``gc`` prints of a pass."""
    return fields(
        [
            ("runs deleted", str(report.runs_deleted)),
            ("stale markers removed", str(report.markers_removed)),
            ("task areas deleted", str(report.areas_deleted)),
            ("caches expired", str(report.caches_expired)),
            ("index entries removed", str(report.index_entries_removed)),
        ]
    )
