"""What the client commands print: tables, field lists, times, durations, sizes, and JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from runstore.contract.codec import to_data
from runstore.contract.model import Step

NONE = "-"
"""What a table shows for a value that is not there (a time not reached yet)."""


def json_option() -> argparse.ArgumentParser:
    """The parent parser of ``--json``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document, as the runservice's API answers"
    )
    return parser


def print_json(value: Any) -> None:
    """Print ``value`` as the API's JSON (:func:`codec.to_data`), indented."""
    json.dump(to_data(value), sys.stdout, indent=2)
    sys.stdout.write("\n")


def when(time: datetime | None) -> str:
    """A time in UTC to the second, as ``2025-05-04 10:12:03``; ``-`` for None."""
    return NONE if time is None else time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """A duration as ``0.4s``, ``42s``, ``3m05s``, ``2h03m`` or ``3d04h`` (cut, not rounded up);
    ``-`` for None. A negative one (clocks apart) shows as 0."""
    if seconds is None:
        return NONE
    seconds = max(seconds, 0.0)
    if seconds < 10:
        tenths = int(seconds * 10 + 1e-6)  # 2.3 s is 22.999... tenths as a float
        return f"{tenths // 10}.{tenths % 10}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def span(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """How long from ``start`` to ``end`` (to ``now`` if it has not ended); ``-`` if not started."""
    if start is None:
        return NONE
    return duration(((end or now) - start).total_seconds())


def size(count: int) -> str:
    """A number of bytes as ``512 B``, ``1.5 KiB``, ``12.0 MiB``, ``3.2 GiB`` or ``1.0 TiB``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns under ``headers``, each as wide as its widest cell, two spaces apart; no
    trailing spaces, a newline after each line."""
    lines = [list(headers), *(list(row) for row in rows)]
    for line in lines[1:]:
        if len(line) != len(headers):
            raise ValueError(f"a row has {len(line)} cells, the headers {len(headers)}")
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in lines
    )


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``name:`` and value pairs, a line each, the values aligned."""
    pairs = list(pairs)
    width = max((len(name) for name, _ in pairs), default=0) + 1
    return "".join(f"{name + ':':<{width}}  {value}".rstrip() + "\n" for name, value in pairs)


def step_kind(step: Step) -> str:
    """A step's kind and name, as ``run "tests"`` (``run`` without a name)."""
    return f'{step.kind.value} "{step.name}"' if step.name else step.kind.value


def step_title(index: int, step: Step) -> str:
    """A step as a table names it: its number, kind and name, as ``1 run "tests"``."""
    return f"{index} {step_kind(step)}"
