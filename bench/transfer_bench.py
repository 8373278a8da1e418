"""Benchmark parallel S3 transfers: ``max_concurrency`` parts or ranges in flight against one at a time.

Run from the repository root::

    python bench/transfer_bench.py           # a 256 MiB object, about 3 minutes
    python bench/transfer_bench.py --quick   # a 32 MiB object in 5 MiB parts (the smoke test)

A local moto server (``tests/s3server.py``, in its ``--concurrent`` mode: requests
served at once, and a ranged GET reading only its range, as a far server does) sits
behind ``bench/latency_proxy.py``, a streaming proxy that adds 20 ms to every request and
paces each connection to 64 MiB/s: the headline model of a far S3 endpoint, where one TCP
connection moves tens of MiB/s (its window over the round trip) and parallel transfers pay
off because each connection adds its own share. On loopback one connection moves GiB/s,
so with the latency alone (the second scenario, for information) 16 requests x 20 ms are
small next to the bytes' own time, which client, proxy and server spend on the same CPUs.
Each measurement runs in a fresh child process, an S3Storage with the default settings
(``part_size`` 16 MiB, ``max_concurrency`` 8; ``--quick``: 5 MiB parts), which reports its
time and peak RSS growth (VmHWM):

* put: ``write`` of a generated stream (size unknown: a multipart upload);
* read_bytes: the whole object into memory;
* download: the whole object to a local file.

The baseline is the same code with ``max_concurrency=1``, measured in the same run, the
repetitions interleaved (ratio = baseline time / parallel time; target: 3x or more).
Peak RSS is compared with the bound docs/objstore.md states: a put holds about
``(max_concurrency + 1) * part_size``; a download about 2 MiB per range in flight (it
writes each range at its offset as it comes); ``read_bytes`` the object once. Each bound
gets 64 MiB of slack (the interpreter's own allocations).

The last row times one 1 MiB ranged GET of the big object against one of a 1 MiB object,
straight to the server: equal times show a range costs the server the range, not the
object (unpatched moto reads the whole object for each one).

What the server still spends does not overlap perfectly on a small machine: a put's
CompleteMultipartUpload copies the parts once into the object (about 0.2 s for 256 MiB,
the same at either concurrency; unpatched moto copies the object several times, about
1 s), and its parts cost moto CPU the client, proxy and server share.

A missed target is reported, not an error: the exit code is 0 unless something fails,
such as a transfer that does not return the bytes written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
for folder in (REPO_ROOT, REPO_ROOT / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from objstore_bench import (  # noqa: E402
    MiB,
    Row,
    _proc_status,
    _reset_peak_rss,
    format_size,
    format_time,
    generated_chunks,
    print_table,
    race,
    report,
)

BUCKET = "objstore-transfer-bench"
KEY = "transfer/big-object"
REGION = "us-east-1"
DELAY = 0.02
SLACK = 64 * MiB
TARGET = 3.0
OPERATIONS = ("put", "read_bytes", "download")
#: One connection to a far S3 endpoint moves tens of MiB/s.
BANDWIDTH = 64.0 * MiB
#: What the proxy does: the model of a far server (the headline: latency, and each connection
#: paced), then the latency alone (for information: loopback moves GiB/s a connection).
SCENARIOS: tuple[tuple[str, float | None], ...] = (
    (f"{DELAY * 1000:.0f} ms a request, {BANDWIDTH / MiB:.0f} MiB/s a connection", BANDWIDTH),
    (f"{DELAY * 1000:.0f} ms a request", None),
)


@dataclass(frozen=True)
class Plan:
    """How much work the run does."""

    size: int
    part_size: int
    reps: int
    concurrency: int


FULL = Plan(size=256 * MiB, part_size=16 * MiB, reps=3, concurrency=8)
QUICK = Plan(size=32 * MiB, part_size=5 * MiB, reps=1, concurrency=8)


# -- the child: one transfer, its time and peak RSS growth -------------------------------------


def _hashed(chunks: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def child(spec_json: str) -> None:
    """The hidden sub-command: one transfer; prints its seconds, peak RSS growth and MD5 as JSON."""
    from objstore.s3 import S3Storage
    from tests.s3server import ACCESS_KEY, SECRET_KEY

    spec = json.loads(spec_json)
    size: int = spec["size"]
    store = S3Storage(
        spec["endpoint"],
        BUCKET,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        secure=False,
        region=REGION,
        part_size=spec["part_size"],
        max_concurrency=spec["concurrency"],
    )
    target = Path(spec["dir"]) / f"download-{os.getpid()}"
    with store:
        # a small round trip first, so that lazy imports and the first connection are not counted
        store.write("transfer/warm-up", b"warm")
        store.read_bytes("transfer/warm-up")
        store.download("transfer/warm-up", target)
        target.unlink()
        exact = _reset_peak_rss()
        before = _proc_status("VmRSS")
        digest = hashlib.md5(usedforsecurity=False)
        operation = spec["operation"]
        start = time.perf_counter()
        if operation == "put":
            store.write(KEY, _hashed(generated_chunks(size), digest))
        elif operation == "read_bytes":
            data = store.read_bytes(KEY)
        else:
            store.download(KEY, target)
        seconds = time.perf_counter() - start
        peak = _proc_status("VmHWM") if exact else 0
    if operation == "read_bytes":
        moved = len(data)
        digest.update(data)
        del data
    elif operation == "download":
        moved = target.stat().st_size
        with target.open("rb") as file:
            for _ in range(moved // MiB + 2):
                chunk = file.read(MiB)
                if not chunk:
                    break
                digest.update(chunk)
        target.unlink()
    else:
        moved = size
    result = {"seconds": seconds, "growth": max(peak - before, 0), "exact": exact, "moved": moved}
    print(json.dumps({**result, "md5": digest.hexdigest()}))


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the transfer child {spec['operation']} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["moved"] != spec["size"]:
        raise RuntimeError(f"{spec['operation']} moved {result['moved']} bytes, not {spec['size']}")
    return result


# -- the parent: server, proxy, interleaved repetitions ----------------------------------------


def bound(operation: str, plan: Plan, concurrency: int) -> int:
    """The peak RSS growth docs/objstore.md allows the transfer, with the slack."""
    if operation == "put":
        return (concurrency + 1) * plan.part_size + SLACK
    if operation == "read_bytes":
        return plan.size + SLACK
    return 2 * MiB * concurrency + SLACK


@dataclass
class Results:
    """What the children of one scenario reported: best times and peak RSS growths."""

    best: dict[tuple[str, int], float]
    growth: dict[tuple[str, int], int]
    exact: bool


def measure(plan: Plan, endpoint: str, folder: str) -> Results:
    """Every operation at both concurrencies, ``plan.reps`` interleaved rounds."""
    results = Results({}, {}, True)
    digests: set[str] = set()
    written = ""
    levels = (plan.concurrency, 1)
    for operation in OPERATIONS:
        for rep in range(plan.reps):
            for concurrency in levels[rep % 2 :] + levels[: rep % 2]:
                spec = {
                    "operation": operation,
                    "endpoint": endpoint,
                    "size": plan.size,
                    "part_size": plan.part_size,
                    "concurrency": concurrency,
                    "dir": folder,
                }
                result = run_child(spec)
                if operation == "put":
                    written = result["md5"]  # the reads get the object the last put wrote
                else:
                    digests.add(result["md5"])
                key = (operation, concurrency)
                results.best[key] = min(results.best.get(key, float("inf")), result["seconds"])
                results.growth[key] = max(results.growth.get(key, 0), result["growth"])
                results.exact = results.exact and result["exact"]
                print(
                    f"  {operation}, max_concurrency={concurrency}: {format_time(result['seconds'])}, "
                    f"peak RSS growth {result['growth'] / MiB:.1f} MiB",
                    flush=True,
                )
    if digests != {written}:
        raise RuntimeError(f"a read returned other bytes than the last put ({digests} vs {written})")
    return results


def time_rows(plan: Plan, scenario: str, results: Results, *, headline: bool) -> list[Row]:
    """A row for each operation: the parallel time against ``max_concurrency=1`` (with the
    target only for the headline model)."""
    rows = []
    mib = plan.size / MiB
    for operation in OPERATIONS:
        parallel, single = results.best[(operation, plan.concurrency)], results.best[(operation, 1)]
        ratio = single / parallel
        row = Row(
            name=f"s3 {operation} {format_size(plan.size)}, {scenario}",
            ours=f"{format_time(parallel)} ({mib / parallel:.0f} MiB/s, {plan.concurrency} at once)",
            baseline=f"{format_time(single)} ({mib / single:.0f} MiB/s, one at a time)",
            ratio=ratio,
            target=f">= {TARGET:.2f}x" if headline else "",
            passed=ratio >= TARGET if headline else None,
        )
        rows.append(report(row))
    return rows


def memory_rows(plan: Plan, all_results: list[Results]) -> list[Row]:
    """A row for each operation and concurrency: the largest peak RSS growth against its bound."""
    rows = []
    exact = all(results.exact for results in all_results)
    for operation in OPERATIONS:
        for concurrency in (plan.concurrency, 1):
            used = max(results.growth[(operation, concurrency)] for results in all_results)
            limit = bound(operation, plan, concurrency)
            row = Row(
                name=f"s3 {operation} max_concurrency={concurrency}, peak RSS growth",
                ours=f"{used / MiB:.1f} MiB{'' if exact else ' (not measured: no VmHWM reset)'}",
                baseline="-",
                target=f"< {limit // MiB} MiB",
                passed=used < limit,
            )
            rows.append(report(row))
    return rows


def server_row(plan: Plan, endpoint: str) -> Row:
    """What one ranged GET costs the server (no proxy): of the big object, and of a 1 MiB one.

    In the ``--concurrent`` mode the two are alike (moto alone reads the whole object for
    each range: about 146 ms for a 1 MiB range of 256 MiB).
    """
    from objstore.s3 import S3Storage
    from tests.s3server import ACCESS_KEY, SECRET_KEY

    store = S3Storage(
        endpoint, BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION
    )
    with store:
        store.write("transfer/small", os.urandom(MiB))
        best = race(
            {
                "big": lambda: store.read_range(KEY, 0, MiB),
                "small": lambda: store.read_range("transfer/small", 0, MiB),
            },
            5,
        )
        store.delete("transfer/small")
    return report(
        Row(
            name=f"server: a 1 MiB ranged GET of the {format_size(plan.size)} object (no proxy)",
            ours=format_time(best["big"]),
            baseline=f"{format_time(best['small'])} (of a 1 MiB object)",
            ratio=best["small"] / best["big"],
        )
    )


def run(plan: Plan, folder: str) -> tuple[list[Row], int]:
    """Start the server, measure each scenario behind a proxy of its own; the rows and how many
    requests the proxies relayed."""
    from latency_proxy import LatencyProxy
    from minio import Minio

    from tests import s3server

    server = s3server.start(serialized=False)
    rows: list[Row] = []
    all_results: list[Results] = []
    requests = 0
    try:
        Minio(
            server.endpoint, access_key=s3server.ACCESS_KEY, secret_key=s3server.SECRET_KEY, secure=False
        ).make_bucket(BUCKET)
        for scenario, bandwidth in SCENARIOS:
            print(scenario, flush=True)
            with LatencyProxy(server.endpoint, delay=DELAY, bandwidth=bandwidth) as proxy:
                results = measure(plan, proxy.endpoint, folder)
                requests += proxy.counts()[0]
            all_results.append(results)
            rows += time_rows(plan, scenario, results, headline=bandwidth is not None)
        rows.append(server_row(plan, server.endpoint))
    finally:
        server.stop()
    return rows + memory_rows(plan, all_results), requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 32 MiB object in 5 MiB parts, once")
    parser.add_argument("--dir", type=Path, help="the folder for downloads (default: the system's temp)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    plan = QUICK if args.quick else FULL
    print(
        f"objstore transfer benchmark ({'quick' if args.quick else 'full'}): Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; {format_size(plan.size)} in "
        f"{format_size(plan.part_size)} parts, {DELAY * 1000:.0f} ms added to each request; "
        f"best of {plan.reps}",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="objstore-transfer-", dir=args.dir) as folder:
        rows, requests = run(plan, folder)
    print_table(rows, "ratio = time one at a time / time in parallel (higher is better).")
    print(f"the proxies relayed {requests} requests")
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
