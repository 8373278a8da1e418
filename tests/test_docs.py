"""The examples in the docs run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import s3env

ROOT = Path(__file__).resolve().parent.parent
#: Pages without python examples: the home page and the changelog (links and lists), and
#: docs/cli.md, whose shell sessions tests/test_cli_docs.py runs.
WITHOUT_PYTHON = ("index.md", "changelog.md", "cli.md")
#: The pages with python examples.
DOCS = sorted(path for path in (ROOT / "docs").glob("*.md") if path.name not in WITHOUT_PYTHON)
#: The bucket that S3 examples name; the test runs them on a fresh bucket of the test server.
EXAMPLE_BUCKET = "my-bucket"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def on_s3(blocks: list[str]) -> bool:
    """Whether the examples use S3 (they name ``s3://my-bucket``)."""
    return any(f"s3://{EXAMPLE_BUCKET}" in block for block in blocks)


def test_some_example_runs_on_s3() -> None:
    assert on_s3(python_blocks(ROOT / "docs" / "fsspec.md"))


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_examples_run(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Every python block runs, in order, in a fresh folder; S3 examples run with the ``AWS_*``
    variables pointing at the test server, on a fresh bucket in place of ``my-bucket``."""
    blocks = python_blocks(path)
    assert blocks, f"{path.name} has no python example"
    monkeypatch.chdir(tmp_path)
    if on_s3(blocks):
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")()
        s3env.use_test_server(monkeypatch, tmp_path, endpoint)
        blocks = [block.replace(f"s3://{EXAMPLE_BUCKET}", f"s3://{bucket}") for block in blocks]
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)


def test_readme_quick_start_demo(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    commands = (
        re.findall(r"^```sh\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)[0].strip().splitlines()
    )
    assert len(commands) == 2 and "pytest" in commands[1]
    assert commands[0].endswith("python -m runstore demo")
    # The first command's main job, run on this interpreter (the install step is CI's).
    out = run_module("runstore", "demo", "--store", str(tmp_path / "data"))
    assert out.count(": finished, success") == 2
    assert out.count("(shared with the restarted run)") == 3
    assert "the shared test log survives" in out and "all tests passed" in out
    assert "the test log is gone" in out and "does not exist" in out
    assert "task logs left in the store: 0" in out


def test_objstore_demo(tmp_path: Path) -> None:
    out = run_module("objstore", "demo", str(tmp_path / "data"))
    assert "read back 'logs/task-1/steps/0.log'" in out
    assert "42 passed" in out


def run_module(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
