"""The ``objstore`` command line (see docs/cli.md); it needs the ``cli`` extra."""

from __future__ import annotations

import sys

from ..errors import MissingExtraError


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (1, saying so, without the ``cli`` extra)."""
    try:
        from .main import main as run
    except MissingExtraError as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 1
    return run(argv)


__all__ = ["main"]
