"""The errors of runstore's data layer, rooted at :class:`RunstoreError`.

Missing and existing objects raise objstore's ``NotExistError`` and ``AlreadyExistsError``.
"""

from __future__ import annotations


class RunstoreError(Exception):
    """Base of the errors raised by runstore's data layer."""


class InvalidIdError(RunstoreError, ValueError):
    """An id, step, cache group or cache key breaks a rule; ``rule`` says which."""

    def __init__(self, kind: str, value: object, rule: str) -> None:
        super().__init__(f"invalid {kind} {value!r}: {rule}")
        self.kind = kind
        self.value = value
        self.rule = rule
