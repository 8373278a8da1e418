"""An AWS environment for tests: no AWS variable set, and a fresh home without ~/.aws."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Unset every ``AWS_*`` variable and point ``HOME`` at an empty folder; return it.

    The real home directory, and its ``~/.aws`` files, are never read.
    """
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("USERPROFILE", raising=False)
    return home


def write_aws_file(path: Path, text: str) -> Path:
    """Write an AWS credentials or config file (making its folder); return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
