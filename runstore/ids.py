"""Validation of the ids and names that become parts of storage keys."""

from __future__ import annotations

import re

from runstore.errors import InvalidIdError

MAX_ID_LENGTH = 128
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STEP_TEXT = re.compile(r"0|[1-9][0-9]{0,8}")


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


def parse_step(text: str, count: int | None = None) -> int:
    """The step number ``text`` names, as a URL gives it; ``InvalidIdError`` naming it if none.

    The one rule of every endpoint that takes a step: a decimal int >= 0 without leading
    zeros ("0", "12"; not "01", "-1", "+1", " 1"), below ``count`` (the task's steps) where
    that is known.
    """
    if not _STEP_TEXT.fullmatch(text):
        raise InvalidIdError("step", text, "a step is a decimal int >= 0 without leading zeros")
    number = int(text)
    if count is not None and number >= count:
        raise InvalidIdError("step", text, f"the task has {count} step(s), numbered from 0")
    return number


def parse_log_step(text: str, count: int | None = None) -> int | str:
    """The log ``text`` names: ``"setup"`` or a step (:func:`parse_step`)."""
    return "setup" if text == "setup" else parse_step(text, count)


def check_archive_step(step: object) -> int:
    """Return an archive step: an int >= 0."""
    if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
        return step
    raise InvalidIdError("step", step, "an archive step is an int >= 0")
