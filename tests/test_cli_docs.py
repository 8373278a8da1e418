"""The ``objstore`` sessions of docs/cli.md run, in order, and print what the page shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from tests import s3env
from tests.conftest import S3Endpoint
from tests.test_docs import EXAMPLE_BUCKET, ROOT

PAGE = ROOT / "docs" / "cli.md"
#: The folder the sessions run in, as the page names it.
SESSION_FOLDER = "/tmp/session"
#: What differs from one run to the next: times, etags, the server's port, signatures.
_VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\+00:00)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<etag>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "<host>"),
    (re.compile(r"\?X-Amz-\S+"), "?<signature>"),
    (re.compile(r"[ \t]+"), " "),
]


@attrs.frozen
class Session:
    """A command of the page, and what it shows: its output lines and its exit code."""

    command: str
    output: list[str]
    code: int = 0


def sessions(section: str) -> list[Session]:
    """The sessions of the ``console`` blocks of ``section``; ``$ echo $?`` gives the code
    of the command before it."""
    found: list[Session] = []
    for block in re.findall(r"^```console\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE):
        lines = block.splitlines()
        while lines:
            command = lines.pop(0)
            assert command.startswith("$ "), command
            output = []
            while lines and not lines[0].startswith("$ "):
                output.append(lines.pop(0))
            if command == "$ echo $?":
                found[-1] = attrs.evolve(found[-1], code=int(output[0]))
            else:
                found.append(Session(command[2:], output))
    return found


def objstore_section() -> str:
    text = PAGE.read_text()
    return text[text.index("\n## objstore\n") : text.index("\n## runstore\n")]


def normalised(lines: list[str]) -> list[str]:
    """The lines without what varies from run to run, sorted: objects copied in parallel
    are said in any order."""
    result = []
    for line in lines:
        for pattern, replacement in _VARYING:
            line = pattern.sub(replacement, line)
        result.append(line.strip())
    return sorted(result)


def test_the_page_has_a_session_for_each_command() -> None:
    commands = {shlex.split(session.command)[1] for session in sessions(objstore_section())}
    assert commands == {"ls", "stat", "cat", "cp", "sync", "rm", "presign"}


def test_the_sessions_print_what_the_page_shows(
    s3_endpoint: S3Endpoint, s3_bucket: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_bucket()  # type: ignore[operator]
    s3env.use_test_server(monkeypatch, tmp_path, s3_endpoint)
    folder = tmp_path / "session"
    (folder / "site" / "css").mkdir(parents=True)
    (folder / "notes.txt").write_text("line one\nline two\n")
    (folder / "site" / "index.html").write_text("<h1>hello</h1>\n")
    (folder / "site" / "css" / "main.css").write_text("h1 { color: teal }\n")

    def here(text: str) -> str:
        return text.replace(SESSION_FOLDER, str(folder)).replace(EXAMPLE_BUCKET, bucket)

    checked = 0
    for session in sessions(objstore_section()):
        argv = shlex.split(here(session.command))
        assert argv[0] == "objstore"
        result = subprocess.run(
            [sys.executable, "-m", "objstore", *argv[1:]],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        shown = (result.stdout + result.stderr).splitlines()
        expected = [here(line) for line in session.output]
        assert result.returncode == session.code, (session.command, result.stderr)
        assert normalised(shown) == normalised(expected), session.command
        checked += 1
    assert checked >= 15
