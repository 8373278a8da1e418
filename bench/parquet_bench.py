"""Read one column of a parquet file on S3 with pandas: the fsspec bridge against pyarrow's S3FileSystem.

Run from the repository root::

    python bench/parquet_bench.py           # a 72 MiB file, 16 row groups, 6 columns
    python bench/parquet_bench.py --quick   # the same shape at 9 MiB (the smoke test)

A local moto server (started and stopped here, on 127.0.0.1) holds the file; each reader
goes through its own counting proxy (``tests/faultproxy.FaultProxy``, with no faults) in
front of it, which counts the requests and the bytes of the answers' bodies. The readers:

* the bridge by URL: ``pd.read_parquet("objstore://...", columns=[...],
  storage_options={"url": "s3://bucket/prefix", ...})`` with the bridge's default
  ``block_size`` and ``cache_type``;
* pyarrow's own ``pyarrow.fs.S3FileSystem`` (``endpoint_override``, scheme http), passed
  to pandas as ``filesystem=``.

Both read the same column of the same file, checked against the data written. Target:
the bridge moves at most 1.2x the bytes that pyarrow moves. For information, the bridge
with fsspec's usual cache (``cache_type="readahead"``, 5 MiB blocks) reads it too; what
that one moves varies from run to run with the order of pyarrow's concurrent reads,
while the two others fetch exactly the ranges asked for. Times are shown for information. The exit code is 0
unless something fails (a missed target is reported, not an error). The last line is
``RESULT {json}``: the figures, for the smoke test.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from minio import Minio  # noqa: E402
from pyarrow.fs import S3FileSystem  # noqa: E402

from bench.objstore_bench import MiB, Row, format_ratio, format_time, print_table, report  # noqa: E402
from tests import s3server  # noqa: E402
from tests.faultproxy import FaultProxy  # noqa: E402

BUCKET = "objstore-parquet-bench"
PREFIX = "tables"
KEY = "runs.parquet"
REGION = "us-east-1"
COLUMNS = ("id", "a", "b", "c", "d", "e")
READ_COLUMN = "c"
ROW_GROUPS = 16
#: The most bytes the bridge may move, against pyarrow's S3FileSystem.
TARGET = 1.2


@dataclass(frozen=True)
class Plan:
    """The file's size: rows of ``len(COLUMNS)`` 8-byte random values."""

    rows: int


FULL = Plan(rows=72 * MiB // (8 * len(COLUMNS)))
QUICK = Plan(rows=9 * MiB // (8 * len(COLUMNS)))


@dataclass(frozen=True)
class Measure:
    """What one reader moved through its proxy, and how long it took."""

    body_bytes: int
    requests: int
    seconds: float


def make_table(rows: int) -> pa.Table:
    """Random int64 and float64 columns: nothing compresses away."""
    generator = np.random.default_rng(0)
    data: dict[str, Any] = {}
    for index, name in enumerate(COLUMNS):
        if index % 3 == 0:
            data[name] = generator.integers(0, 1 << 62, rows, dtype=np.int64)
        else:
            data[name] = generator.random(rows)
    return pa.table(data)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=-(-table.num_rows // ROW_GROUPS), use_dictionary=False)
    return buffer.getvalue()


def through_proxy(upstream: str, read: Callable[[str], pd.DataFrame], expected: pd.Series) -> Measure:
    """Run ``read(proxy_endpoint)`` through a fresh counting proxy; check the column it returns."""
    with FaultProxy(upstream) as proxy:
        start = time.perf_counter()
        frame = read(proxy.endpoint)
        seconds = time.perf_counter() - start
        measure = Measure(proxy.body_bytes, proxy.requests, seconds)
    if list(frame.columns) != [READ_COLUMN] or not frame[READ_COLUMN].equals(expected):
        raise RuntimeError("the column read differs from the one written")
    return measure


def bridge_options(endpoint: str) -> dict[str, Any]:
    """The storage options of the bridge by URL: the store's URL and ``from_url``'s options."""
    return {
        "store_url": f"s3://{BUCKET}/{PREFIX}",
        "endpoint": f"http://{endpoint}",
        "access_key": s3server.ACCESS_KEY,
        "secret_key": s3server.SECRET_KEY,
        "region": REGION,
    }


def read_through_bridge(endpoint: str) -> pd.DataFrame:
    options = bridge_options(endpoint)
    return pd.read_parquet(f"objstore://{KEY}", columns=[READ_COLUMN], storage_options=options)


def read_through_bridge_readahead(endpoint: str) -> pd.DataFrame:
    """The bridge with fsspec's usual cache, "readahead" of 5 MiB: for information."""
    options = {**bridge_options(endpoint), "cache_type": "readahead"}
    return pd.read_parquet(f"objstore://{KEY}", columns=[READ_COLUMN], storage_options=options)


def read_through_pyarrow(endpoint: str) -> pd.DataFrame:
    filesystem = S3FileSystem(
        access_key=s3server.ACCESS_KEY,
        secret_key=s3server.SECRET_KEY,
        endpoint_override=endpoint,
        scheme="http",
        region=REGION,
    )
    return pd.read_parquet(f"{BUCKET}/{PREFIX}/{KEY}", columns=[READ_COLUMN], filesystem=filesystem)


def format_bytes(size: int) -> str:
    return f"{size / MiB:.2f} MiB ({size:,} B)"


def run(plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    from objstore.s3 import S3Storage

    table = make_table(plan.rows)
    data = parquet_bytes(table)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    column = COLUMNS.index(READ_COLUMN)
    column_bytes = sum(
        metadata.row_group(group).column(column).total_compressed_size
        for group in range(metadata.num_row_groups)
    )
    print(
        f"file: {format_bytes(len(data))}, {metadata.num_row_groups} row groups, {len(COLUMNS)} columns; "
        f"column {READ_COLUMN!r}: {format_bytes(column_bytes)}",
        flush=True,
    )
    expected = table.column(READ_COLUMN).to_pandas().rename(READ_COLUMN)
    server = s3server.start()
    try:
        Minio(
            server.endpoint,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
            secure=False,
            region=REGION,
        ).make_bucket(BUCKET)
        with S3Storage(
            server.endpoint,
            BUCKET,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
            secure=False,
            region=REGION,
        ) as store:
            store.write(f"{PREFIX}/{KEY}", data)
        pyarrow = through_proxy(server.endpoint, read_through_pyarrow, expected)
        bridge = through_proxy(server.endpoint, read_through_bridge, expected)
        readahead = through_proxy(server.endpoint, read_through_bridge_readahead, expected)
    finally:
        server.stop()
    ratio = bridge.body_bytes / pyarrow.body_bytes
    label = f"parquet, 1 of {len(COLUMNS)} columns of {len(data) / MiB:.0f} MiB"
    rows = [
        report(
            Row(
                name=f"{label}: bytes moved",
                ours=format_bytes(bridge.body_bytes),
                baseline=f"{format_bytes(pyarrow.body_bytes)} (pyarrow S3FileSystem)",
                ratio=ratio,
                target=f"<= {TARGET:.2f}x",
                passed=ratio <= TARGET,
            )
        ),
        report(
            Row(
                name=f"{label}: requests",
                ours=str(bridge.requests),
                baseline=f"{pyarrow.requests} (pyarrow S3FileSystem)",
                ratio=bridge.requests / pyarrow.requests,
            )
        ),
        report(
            Row(
                name=f"{label}: bytes moved, cache_type='readahead'",
                ours=format_bytes(readahead.body_bytes),
                baseline=f"{format_bytes(pyarrow.body_bytes)} (pyarrow S3FileSystem)",
                ratio=readahead.body_bytes / pyarrow.body_bytes,
            )
        ),
        report(
            Row(
                name=f"{label}: time",
                ours=format_time(bridge.seconds),
                baseline=f"{format_time(pyarrow.seconds)} (pyarrow S3FileSystem)",
                ratio=bridge.seconds / pyarrow.seconds,
            )
        ),
    ]
    result = {
        "file_bytes": len(data),
        "column_bytes": column_bytes,
        "bridge": vars(bridge),
        "pyarrow": vars(pyarrow),
        "bridge_readahead": vars(readahead),
        "bytes_ratio": ratio,
        "target": TARGET,
    }
    return rows, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 9 MiB file (the smoke test)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"parquet benchmark ({'quick' if args.quick else 'full'})", flush=True)
    rows, result = run(QUICK if args.quick else FULL)
    print_table(
        rows,
        "ratio = objstore / pyarrow (lower is better), from a single run; times are informative. "
        f"Bytes ratio {format_ratio(result['bytes_ratio'])}.",
    )
    print(f"total time {time.perf_counter() - started:.0f} s")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
