"""Check an installed wheel as a user would meet it, outside the source tree.

``installed.py full WHEEL SOURCE``: installed with every runtime extra; ``installed.py base
WHEEL SOURCE``: installed without extras. Exits 1 naming each check that failed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

DISTRIBUTION = "objstore-runstore"
PACKAGES = ("objstore", "runstore")
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        failures.append(what)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def common(wheel: Path, source: Path) -> None:
    for package in PACKAGES:
        module = importlib.import_module(package)
        where = Path(module.__file__ or "")
        check(source not in where.parents, f"{package} is imported from the install, not the source: {where}")
        check((importlib.resources.files(package) / "py.typed").is_file(), f"{package} has py.typed")
    declared = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    installed = importlib.metadata.version(DISTRIBUTION)
    check(installed == declared, f"the installed version {installed} is pyproject's {declared}")
    for package in PACKAGES:
        found = importlib.import_module(package).__version__
        check(found == declared, f"{package}.__version__ is {found}")
    points = importlib.metadata.entry_points()
    scripts = {point.name: point.value for point in points.select(group="console_scripts")}
    for script, target in (("objstore", "objstore.cli:main"), ("runstore", "runstore.__main__:main")):
        check(scripts.get(script) == target, f"console script {script}: {scripts.get(script)}")
    specs = {point.name: point.value for point in points.select(group="fsspec.specs")}
    check(specs.get("objstore") == "objstore.fsspec:ObjstoreFileSystem", f"fsspec entry point: {specs}")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    wanted = {
        path.relative_to(source).as_posix()
        for package in PACKAGES
        for path in (source / package).rglob("*")
        if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    missing = sorted(wanted - names)
    check(not missing, f"the wheel holds each of the {len(wanted)} modules and py.typed; missing: {missing}")
    licenses = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    check(len(licenses) == 1, f"the wheel carries the LICENSE: {licenses}")
    pip = run(sys.executable, "-m", "pip", "check")
    check(pip.returncode == 0, f"pip check: {pip.stdout.strip() or pip.stderr.strip()}")


def full(bin_dir: Path) -> None:
    for name in ("runstore.runservice.api", "runstore.executor.executor", "objstore.cli.main"):
        importlib.import_module(name)
    check(True, "the runservice, the executor and the objstore command line import")
    for script in ("objstore", "runstore"):
        done = run(str(bin_dir / script), "--help")
        check(done.returncode == 0 and f"usage: {script}" in done.stdout, f"{script} --help")


def base(bin_dir: Path) -> None:
    import objstore
    import runstore

    check(bool(objstore.PosixStorage and runstore.RunStore), "objstore and runstore import without extras")
    from runstore.contract.clients import RunServiceClient

    check(bool(RunServiceClient), "the runservice's client imports without extras")
    for module, extra in (
        ("runstore.runservice", "runservice"),
        ("runstore.executor", "runservice"),
        ("objstore.cli.main", "cli"),
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            named = f"pip install '{DISTRIBUTION}[{extra}]'" in str(exc)
            check(named, f"importing {module} names the {extra!r} extra: {exc}")
        else:
            check(False, f"importing {module} failed without the {extra!r} extra")
    commands = ((["objstore", "ls", "s3://bucket/"], "cli"), (["runstore", "runservice"], "runservice"))
    for argv, extra in commands:
        done = run(str(bin_dir / argv[0]), *argv[1:])
        named = done.returncode == 1 and f"[{extra}]" in done.stderr and "Traceback" not in done.stderr
        check(named, f"{' '.join(argv)} exits 1 naming the {extra!r} extra: {done.stderr.strip()}")
    done = run(str(bin_dir / "runstore"), "runs", "list", "--help")
    check(done.returncode == 0, "runstore runs list works without extras")


def main() -> int:
    mode, wheel, source = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve()
    common(wheel, source)
    bin_dir = Path(sys.executable).parent
    {"full": full, "base": base}[mode](bin_dir)
    print(f"{len(failures)} check(s) failed" if failures else "every check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
