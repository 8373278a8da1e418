"""What a release carries: one version, its changelog entry, the license, the Python range,
and an error naming the extra that a part lacks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

import objstore
import runstore
from tests.test_docs import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_both_packages_give_the_distributions_version() -> None:
    assert objstore.__version__ == runstore.__version__ == PROJECT["version"]


def test_the_changelog_keeps_a_changelog_with_an_entry_for_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d\d-\d\d))?$", text, flags=re.MULTILINE)
    assert versions[0] == ("Unreleased", "")
    assert versions[1][0] == PROJECT["version"] and versions[1][1]
    assert "### Added" in text


def test_the_license_is_the_one_declared() -> None:
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_declared_python_range_is_the_tested_one() -> None:
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert PROJECT["requires-python"] == f">={tested},<3.{sys.version_info.minor + 1}"
    versions = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.search(r"Python :: 3\.\d+$", c)]
    assert versions == [tested]
    assert f"Python\n{tested}" in (ROOT / "README.md").read_text() or f"Python {tested}" in (
        ROOT / "README.md"
    ).read_text()


BLOCKED = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # as if not installed\n"


def without(names: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``names`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKED.format(names=names) + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("runstore.runservice", ["hypercorn"], "runservice"),
        ("runstore.executor", ["starlette"], "runservice"),
        ("runstore.contract.http.server", ["hypercorn", "starlette"], "runservice"),
        ("objstore.cli.main", ["tqdm"], "cli"),
    ],
)
def test_a_part_without_its_extra_names_it(module: str, blocked: list[str], extra: str) -> None:
    done = without(blocked, f"import {module}")
    assert done.returncode == 1
    assert "MissingExtraError: " in done.stderr
    assert f"pip install 'objstore-runstore[{extra}]' (missing: {blocked[0]}" in done.stderr


def test_the_base_needs_no_extra() -> None:
    code = (
        "import objstore, runstore, runstore.commands, runstore.contract.clients\n"
        "store = objstore.from_url('memory://')\n"
        "runstore.RunStore(store)\n"
        "print('ok')\n"
    )
    done = without(["hypercorn", "starlette", "tqdm"], code)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_the_commands_without_their_extra_say_which_and_exit_1() -> None:
    done = without(["tqdm"], "from objstore.cli import main\nsys.exit(main(['ls', 's3://bucket/']))")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("objstore: the objstore command line needs the 'cli' extra")
    run = "from runstore.__main__ import main\nsys.exit(main({argv!r}))"
    done = without(["hypercorn"], run.format(argv=["runservice", "--no-tokens"]))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("runstore: runservice: the runservice needs the 'runservice' extra")
    done = without(["hypercorn"], run.format(argv=["runs", "list", "--help"]))
    assert done.returncode == 0 and "--group" in done.stdout
