"""Every benchmark's quick mode runs and reports right figures (a smoke test: no timing is
asserted; the speeds are a report)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = re.compile(r"^ +(objstore|obstore|boto3) +([0-9.]+) us CPU +([0-9.]+) us wall$", re.MULTILINE)


def run_quick(script: str, *args: str, timeout: float) -> str:
    """The output of ``bench/<script> --quick``, which must succeed."""
    result = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_quick_benchmark_runs(tmp_path: Path) -> None:
    output = run_quick("objstore_bench.py", "--dir", str(tmp_path), timeout=600)
    assert "ratio = baseline time / objstore time" in output
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself


def test_quick_request_cpu_benchmark_runs() -> None:
    output = run_quick("request_cpu_bench.py", timeout=120)
    figures = FIGURES.findall(output)
    assert [name for name, _, _ in figures] == ["objstore", "obstore", "boto3"] * 2, output
    for name, cpu, wall in figures:
        assert 1 < float(cpu) < 100_000, f"{name}: {cpu} us CPU per request"
        assert 1 < float(wall) < 100_000, f"{name}: {wall} us wall per request"
    summary = re.search(r"obstore's: put ([0-9.]+)x, get ([0-9.]+)x \(target <= 1.5x\)", output)
    assert summary is not None, output
    assert all(0 < float(ratio) < 100 for ratio in summary.groups())


def test_quick_transfer_benchmark_reports_every_transfer(tmp_path: Path) -> None:
    output = run_quick("transfer_bench.py", "--dir", str(tmp_path), timeout=300)
    table = output[output.index("measurement") :]
    for operation in ("put", "read_bytes", "download"):
        timed = re.findall(rf"^s3 {operation} 32 MiB, 20 ms a request.*\d\.\d\dx", table, re.MULTILINE)
        assert len(timed) == 2, table  # latency alone, and with paced connections
        for concurrency in (8, 1):
            memory = rf"^s3 {operation} max_concurrency={concurrency}, peak RSS growth .* PASS$"
            assert re.search(memory, table, re.MULTILINE), table  # within the documented bound
    assert list(tmp_path.iterdir()) == []  # no download left behind


def test_quick_parquet_benchmark_runs() -> None:
    output = run_quick("parquet_bench.py", timeout=120)
    assert "pyarrow S3FileSystem" in output
    figures = json.loads(output.strip().splitlines()[-1].removeprefix("RESULT "))
    column, whole = figures["column_bytes"], figures["file_bytes"]
    assert 0 < column < whole / 4  # one column of six
    for reader in ("bridge", "pyarrow"):
        moved = figures[reader]["body_bytes"]
        assert column <= moved < whole / 2, reader  # the column, and far from the whole file
        assert figures[reader]["requests"] >= 16  # a GET per row group at least
    assert figures["bytes_ratio"] == figures["bridge"]["body_bytes"] / figures["pyarrow"]["body_bytes"]
    assert figures["bytes_ratio"] <= figures["target"]  # the bridge's defaults move no more than 1.2x
    assert figures["bridge_readahead"]["body_bytes"] > figures["bridge"]["body_bytes"]


def test_quick_runservice_benchmark_counts_and_times() -> None:
    output = run_quick("runservice_bench.py", timeout=300)
    table = output[output.index("measurement") :]
    idle = re.search(
        r"^idle tick, 1,000 finished runs \(vs none\) +(\d+) requests +(\d+) requests", table, re.M
    )
    assert idle is not None, table
    assert int(idle[1]) == int(idle[2]) == 0  # a tick works from memory: finished runs cost it nothing
    sweep = re.search(r"^sweep, 1,000 finished runs \(vs none\) +(\d+) requests +(\d+) requests", table, re.M)
    assert sweep is not None, table
    assert 0 < int(sweep[1]) <= 1.1 * int(sweep[2])  # it reads the unfinished runs' index, not the runs
    pages = re.findall(r"^a page of 50 runs of 1,005.* +(\d+) requests +- ", table, re.M)
    assert len(pages) == 2 and all(40 < int(spent) < 60 for spent in pages), table  # unfinished: in memory
    assert re.search(r"^delete a 10-task run, 20 ms a request .* \d+\.\d\dx ", table, re.M), table


def test_quick_events_benchmark_reports_every_measure() -> None:
    output = run_quick("events_bench.py", timeout=300)
    table = output[output.index("measurement") :]
    rows = {
        r"S3 requests/s, idle runservice, 0 executors +(-?[0-9.]+)/s": (0, 10_000),
        r"S3 requests/s beyond idle, 2 executor-like clients +(-?[0-9.]+)/s": (-10_000, 10_000),
        r"S3 requests/s beyond idle, 5 executor-like clients +(-?[0-9.]+)/s": (-10_000, 10_000),
        r"S3 requests of a one-task run's life, beyond idle +(-?[0-9]+) requests": (-1_000, 100_000),
        r"dependency hop, chain of 3, S3 at 20 ms a request +([0-9.]+) s": (0, 60),
        r"dependency hop, chain of 3, posix store +([0-9.]+) s": (0, 60),
        r"throughput, 20 one-step tasks, 4 executors --limit 8, posix +([0-9.]+) tasks/s": (0, 1_000),
    }
    for pattern, (low, high) in rows.items():
        row = re.search(rf"^{pattern} .* (PASS|MISS)$", table, re.MULTILINE)
        assert row is not None, f"{pattern}\n{table}"
        assert low <= float(row[1]) < high, row[0]  # a figure, not an error or a wild number
    figures = json.loads(output.strip().splitlines()[-1].removeprefix("RESULT "))
    assert figures["errors"] == [], figures
    assert len(figures["figures"]) == len(rows) and None not in figures["figures"].values(), figures
