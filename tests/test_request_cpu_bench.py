"""The request CPU benchmark runs and reports sane figures (a smoke test: no speed is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = re.compile(r"^ +(objstore|obstore|boto3) +([0-9.]+) us CPU +([0-9.]+) us wall$", re.MULTILINE)


def test_quick_request_cpu_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "bench/request_cpu_bench.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = FIGURES.findall(result.stdout)
    assert [name for name, _, _ in figures] == ["objstore", "obstore", "boto3"] * 2, result.stdout
    for name, cpu, wall in figures:
        assert 1 < float(cpu) < 100_000, f"{name}: {cpu} us CPU per request"
        assert 1 < float(wall) < 100_000, f"{name}: {wall} us wall per request"
    summary = re.search(r"obstore's: put ([0-9.]+)x, get ([0-9.]+)x \(target <= 1.5x\)", result.stdout)
    assert summary is not None, result.stdout
    assert all(0 < float(ratio) < 100 for ratio in summary.groups())
