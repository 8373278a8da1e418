"""The types of the client commands' arguments, checked by the rules the runservice applies, so
that a malformed one is a usage error (exit code 2) before any request."""

from __future__ import annotations

import argparse

from runstore.cache_groups import CacheGroup, check_cache_key
from runstore.errors import InvalidIdError
from runstore.ids import check_id, parse_log_step


def run_id(text: str) -> str:
    """A run id."""
    try:
        return check_id("run id", text)
    except InvalidIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def log_step(text: str) -> int | str:
    """A step number, or ``setup``."""
    try:
        return parse_log_step(text)
    except InvalidIdError as exc:
        raise argparse.ArgumentTypeError(f'{exc.rule}, or "setup"') from None


def cache_group(text: str) -> str:
    """A cache group's path."""
    try:
        return CacheGroup(text).path
    except InvalidIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cache_key(text: str) -> str:
    """A cache key."""
    try:
        return check_cache_key(text)
    except InvalidIdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    """A whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def offset(text: str) -> int:
    """A byte offset: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte offset (a whole number >= 0)")
    return int(text)
