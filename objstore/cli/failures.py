"""What a command reports instead of a traceback: the exit code, and one line naming the cause."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import ObjstoreError

#: A failure the user can fix: not found, already exists, invalid key, bad configuration.
FAILED = 1
#: The command line itself is wrong.
USAGE = 2


class CommandError(Exception):
    """A command failed on ``name`` (a URL or a path); ``str()`` is the line to show."""

    exit_code = FAILED

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}" if name else reason)
        self.name = name
        self.reason = reason


class UsageError(CommandError):
    """The arguments do not make a command (exit code 2)."""

    exit_code = USAGE

    def __init__(self, reason: str) -> None:
        super().__init__("", reason)


def reason(exc: BaseException) -> str:
    """What went wrong, in one line: a local ``OSError`` by its description alone."""
    if isinstance(exc, OSError) and not isinstance(exc, ObjstoreError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def naming(name: str) -> Iterator[None]:
    """Turn a storage or local failure inside the block into a :class:`CommandError` on ``name``."""
    try:
        yield
    except (ObjstoreError, OSError) as exc:
        raise CommandError(name, reason(exc)) from exc
