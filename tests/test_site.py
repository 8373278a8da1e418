"""The documentation site's strict build fails on what CI must catch: a broken link, a
reference to nothing, a page left out of the navigation. (CI builds the real site.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_docs import ROOT


def build(tmp_path: Path, change: Callable[[Path], None]) -> subprocess.CompletedProcess[str]:
    """Build the site strictly from a copy of docs/ that ``change`` altered."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    change(docs)
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"INHERIT: {ROOT / 'mkdocs.yml'}\n"
        f"docs_dir: {docs}\n"
        f"site_dir: {tmp_path / 'site'}\n"
        "plugins:\n"
        "  - search\n"
        "  - mkdocstrings:\n"
        "      handlers:\n"
        "        python:\n"
        f"          paths: [{ROOT}]\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_unchanged_copy_builds(tmp_path: Path) -> None:
    done = build(tmp_path, lambda docs: None)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "objstore" / "index.html").read_text().count("PosixStorage") > 1


@pytest.mark.parametrize(
    ("page", "text", "complaint"),
    [
        ("objstore.md", "\nSee [nothing](nowhere.md).\n", "nowhere.md"),
        ("reference/runstore.md", "\n::: runstore.nothing_here\n", "nothing_here"),
        ("orphan.md", "# Not in the navigation\n", "orphan.md"),
    ],
)
def test_a_strict_build_fails_on(tmp_path: Path, page: str, text: str, complaint: str) -> None:
    def change(docs: Path) -> None:
        with (docs / page).open("a") as file:
            file.write(text)

    done = build(tmp_path, change)
    assert done.returncode != 0 and complaint in done.stderr, done.stderr
