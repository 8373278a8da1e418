"""The current time, in UTC: the one clock of the run store, the run service and the executor."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, in UTC (an aware ``datetime``)."""
    return datetime.now(UTC)
