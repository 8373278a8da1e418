"""The executor never imports objstore or the run store: it runs untrusted build code and
holds no store credentials."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What the executor's process must never load.
FORBIDDEN = ("objstore", "runstore.store", "runstore.caches", "runstore.sharing", "runstore.runservice.state")
EXECUTOR_MODULES = sorted(
    f"runstore.executor.{path.stem}" for path in (ROOT / "runstore" / "executor").glob("*.py")
    if path.stem != "__init__"
)


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_executor_loads_no_storage_module() -> None:
    """Importing every executor module, and the command line the executor runs from, in a
    fresh interpreter loads none of the forbidden modules."""
    code = (
        "import importlib, sys\n"
        f"for name in {[*EXECUTOR_MODULES, 'runstore', 'runstore.__main__']!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert set(EXECUTOR_MODULES) <= set(loaded)
    assert [module for module in loaded if _forbidden(module)] == []


def test_no_executor_module_names_a_storage_module() -> None:
    """Not even in a function (which the import test would not see)."""
    for module in EXECUTOR_MODULES:
        path = ROOT / (module.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "runstore.executor" if node.level == 1 else "runstore" if node.level == 2 else ""
                names = [".".join(filter(None, [base, node.module or ""]))]
            else:
                continue
            assert not [name for name in names if _forbidden(name)], f"{path.name} imports {names}"


def test_the_check_sees_a_storage_import() -> None:
    """The import test fails when a module does load objstore (it can fail)."""
    code = "import sys, runstore.store\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert [module for module in done.stdout.split() if _forbidden(module)]
