"""The distribution objstore is installed from, and its version: the one source is pyproject.toml."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "objstore-runstore"
"""The name objstore and runstore are installed under (``pip install objstore-runstore``)."""


def installed_version() -> str:
    """The installed distribution's version; ``0+unknown`` for a source tree never installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
