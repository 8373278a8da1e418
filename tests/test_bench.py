"""The benchmark runs (its figures are a report, not a test: no timing is asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/objstore_bench.py", "--quick", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ratio = baseline time / objstore time" in result.stdout
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself
