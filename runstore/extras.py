"""The distribution runstore is installed from: its version, and the extras parts of runstore need."""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, version

from runstore.errors import RunstoreError

DISTRIBUTION = "objstore-runstore"
"""The name runstore and objstore are installed under (``pip install objstore-runstore``)."""


def installed_version() -> str:
    """The installed distribution's version; ``0+unknown`` for a source tree never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


class MissingExtraError(RunstoreError, ModuleNotFoundError):
    """A part of runstore was imported without the extra that installs what it needs; the
    message says which extra, and how to install it."""


def require(extra: str, part: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless every one of ``modules`` can be
    imported: ``part`` needs them."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{part} needs the {extra!r} extra: pip install '{DISTRIBUTION}[{extra}]'"
            f" (missing: {', '.join(missing)})",
            name=missing[0],
        )
