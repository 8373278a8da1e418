"""The ``objstore`` command line (see docs/cli.md)."""

from .main import main

__all__ = ["main"]
