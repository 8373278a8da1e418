"""Validation of the ids and names that become parts of storage keys."""

from __future__ import annotations

import re

from .errors import InvalidIdError

MAX_ID_LENGTH = 128
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_id(kind: str, value: object, max_length: int = MAX_ID_LENGTH) -> str:
    """Return ``value`` if it is a safe key segment: letters, digits, ".", "_", "-".

    It starts with a letter or digit (so never "." or ".."), has no "/" and at most
    ``max_length`` characters.
    """
    if not isinstance(value, str):
        raise InvalidIdError(kind, value, f"a {kind} is a str, not {type(value).__name__}")
    if not value:
        raise InvalidIdError(kind, value, f"a {kind} is not empty")
    if len(value) > max_length:
        raise InvalidIdError(kind, value, f"a {kind} has at most {max_length} characters, not {len(value)}")
    if not _ID.fullmatch(value):
        raise InvalidIdError(
            kind,
            value,
            f'a {kind} has only letters, digits, ".", "_" and "-", and starts with a letter or digit',
        )
    return value


def check_step(step: object) -> int | str:
    """Return a log step: an int >= 0 or ``"setup"``."""
    if step == "setup" or (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        return step
    raise InvalidIdError("step", step, 'a step is an int >= 0 or "setup"')


def check_archive_step(step: object) -> int:
    """Return an archive step: an int >= 0."""
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return step
    raise InvalidIdError("step", step, "an archive step is an int >= 0")
