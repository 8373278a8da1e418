"""What a package's modules never import.

The executor never imports objstore or the run store: it runs untrusted build code and
holds no store credentials. The ``runstore`` client commands are HTTP clients of a
runservice: they import neither the store nor the runservice's or the executor's side.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the executor's process must never load.
STORAGE = ("objstore", "runstore.store", "runstore.caches", "runstore.sharing", "runstore.runservice.state")
#: Each package, what its modules (and the entry points beside them) must never load.
RULES = {
    "runstore.executor": (STORAGE, ["runstore", "runstore.__main__"]),
    "runstore.commands": ((*STORAGE, "runstore.runservice", "runstore.executor"), []),
}


def modules_of(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__")


def forbidden(module: str, names: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def loaded_by(modules: list[str]) -> list[str]:
    """The modules a fresh interpreter has loaded once it imported ``modules``."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("package", sorted(RULES))
def test_a_package_loads_nothing_it_must_not(package: str) -> None:
    """Importing every module of the package, and its entry points, in a fresh interpreter
    loads none of the forbidden modules."""
    names, entry_points = RULES[package]
    modules = modules_of(package)
    loaded = loaded_by([*modules, *entry_points])
    assert set(modules) <= set(loaded)
    assert [module for module in loaded if forbidden(module, names)] == []


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_module_of_a_package_names_what_it_must_not(package: str) -> None:
    """Not even in a function (which the import test would not see)."""
    names = RULES[package][0]
    for module in modules_of(package):
        path = ROOT / (module.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package if node.level == 1 else "runstore" if node.level == 2 else ""
                imported = [".".join(filter(None, [base, node.module or ""]))]
            else:
                continue
            wrong = [name for name in imported if forbidden(name, names)]
            assert not wrong, f"{path.name} imports {wrong}"


def test_the_check_sees_a_storage_import() -> None:
    """The import test fails when a module does load objstore (it can fail)."""
    assert [module for module in loaded_by(["runstore.store"]) if forbidden(module, STORAGE)]
