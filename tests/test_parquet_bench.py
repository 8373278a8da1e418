"""The parquet benchmark runs, and its figures are right (bytes and requests: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_parquet_benchmark_runs() -> None:
    result = subprocess.run(
        [sys.executable, "bench/parquet_bench.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "pyarrow S3FileSystem" in result.stdout
    figures = json.loads(result.stdout.strip().splitlines()[-1].removeprefix("RESULT "))
    column, whole = figures["column_bytes"], figures["file_bytes"]
    assert 0 < column < whole / 4  # one column of six
    for reader in ("bridge", "pyarrow"):
        moved = figures[reader]["body_bytes"]
        assert column <= moved < whole / 2, reader  # the column, and far from the whole file
        assert figures[reader]["requests"] >= 16  # a GET per row group at least
    assert figures["bytes_ratio"] == figures["bridge"]["body_bytes"] / figures["pyarrow"]["body_bytes"]
    assert figures["bytes_ratio"] <= figures["target"]  # the bridge's defaults move no more than 1.2x
    assert figures["bridge_readahead"]["body_bytes"] > figures["bridge"]["body_bytes"]
