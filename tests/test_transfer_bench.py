"""The transfer benchmark's quick mode runs and reports every row (its speed is a report, not a test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_transfer_benchmark_reports_every_transfer(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/transfer_bench.py", "--quick", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("measurement") :]
    for operation in ("put", "read_bytes", "download"):
        timed = re.findall(rf"^s3 {operation} 32 MiB, 20 ms a request.*\d\.\d\dx", table, re.MULTILINE)
        assert len(timed) == 2, table  # latency alone, and with paced connections
        for concurrency in (8, 1):
            memory = rf"^s3 {operation} max_concurrency={concurrency}, peak RSS growth .* PASS$"
            assert re.search(memory, table, re.MULTILINE), table  # within the documented bound
    assert list(tmp_path.iterdir()) == []  # no download left behind
