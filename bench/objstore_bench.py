"""Benchmark objstore against baselines measured in the same run.

Run from the repository root::

    python bench/objstore_bench.py           # full run, 3 to 5 minutes
    python bench/objstore_bench.py --quick   # smaller sizes, under a minute (the smoke test)

``--dir DIR`` puts the temporary folders under DIR instead of the system temp dir.

What it compares (ratio = baseline time / objstore time: higher is better, 1.0 is as fast
as the baseline):

* PosixStorage put and get of 4 KiB and 16 MiB objects, given as bytes, against plain
  Python doing the same atomic work on plain files (each put creates a new key): write a
  temporary file in a temporary folder under the same root and rename it into place;
  open and read the whole file.
  Targets: 0.8x for 4 KiB, 0.95x for 16 MiB.
* PosixStorage listing of 100,000 keys in 100 folders: ``list_keys`` against a recursive
  ``os.scandir`` walk that collects the relative paths and sorts them (target 0.5x); and,
  without target, ``list`` (an ObjectInfo per key) against the same walk statting every
  file, and both again for a flat folder of 100,000 keys.
* Peak memory of streaming a 1 GiB object in (from a generator, size unknown) and out
  (1 MiB reads, discarded) with posix, posixflat and s3, each in a fresh child process
  that reads its peak RSS growth; target: under 64 MiB, and for an S3 write the bound
  docs/objstore.md states, (max_concurrency + 1) part sizes, plus 64 MiB.
* S3Storage put, get and list against boto3 on the same local moto server (started and
  stopped here, on 127.0.0.1): informative ratios, no targets.

``--quick`` lists 20,000 keys instead of 100,000, streams 128 MiB instead of 1 GiB and
does fewer repetitions and S3 objects. The machine is noisy: each time is the best of
several repetitions, and the contenders' repetitions are interleaved so that drift hits
all of them. A missed target is reported, not an error: the exit code is 0 unless
something fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from objstore import PosixStorage, Storage  # noqa: E402
from objstore.posixflat import PosixFlatStorage  # noqa: E402

if TYPE_CHECKING:
    from objstore.s3 import S3Storage

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

STREAM_CHUNK = MiB
STREAM_KEY = "stream/big-object"
STREAM_LIMIT = 64 * MiB
S3_BUCKET = "objstore-bench"
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    small_count: int
    small_reps: int
    large_count: int
    large_reps: int
    list_reps: int
    list_folders: int
    list_per_folder: int
    flat_keys: int
    stream_size: int
    s3_reps: int
    s3_small_count: int
    s3_large_count: int
    s3_list_keys: int


FULL = Plan(
    small_count=250,
    small_reps=40,
    large_count=8,
    large_reps=15,
    list_reps=5,
    list_folders=100,
    list_per_folder=1000,
    flat_keys=100_000,
    stream_size=GiB,
    s3_reps=5,
    s3_small_count=200,
    s3_large_count=3,
    s3_list_keys=5000,
)
QUICK = Plan(
    small_count=250,
    small_reps=15,
    large_count=4,
    large_reps=7,
    list_reps=3,
    list_folders=20,
    list_per_folder=1000,
    flat_keys=20_000,
    stream_size=128 * MiB,
    s3_reps=3,
    s3_small_count=50,
    s3_large_count=2,
    s3_list_keys=1000,
)


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    name: str
    ours: str
    baseline: str
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None

    @property
    def status(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "MISS"


# -- timing and formatting ---------------------------------------------------------


def race(
    contenders: dict[str, Callable[[], object]],
    reps: int,
    prepare: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """The best time of each contender over ``reps`` interleaved repetitions.

    Each contender first runs once untimed (to warm the caches); then every repetition
    runs each contender once, in an order that rotates between repetitions. Before every
    run, ``prepare[name]`` (if given) runs untimed.
    """
    names = list(contenders)
    prepare = prepare or {}
    for name in names:
        prepare.get(name, _nothing)()
        contenders[name]()
    best = dict.fromkeys(names, math.inf)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            prepare.get(name, _nothing)()
            gc.collect()
            start = time.perf_counter()
            contenders[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _nothing() -> None:
    pass


def format_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_size(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def ratio_row(
    name: str, best: dict[str, float], ours: str, baseline: str, *, ops: int = 1, target: float | None = None
) -> Row:
    """A row comparing ``best[ours]`` with ``best[baseline]``, times shown per operation."""
    ratio = best[baseline] / best[ours]
    return Row(
        name=name,
        ours=format_time(best[ours] / ops) + ("/op" if ops > 1 else ""),
        baseline=f"{format_time(best[baseline] / ops)}{'/op' if ops > 1 else ''} ({baseline})",
        ratio=ratio,
        target="" if target is None else f">= {target:.2f}x",
        passed=None if target is None else ratio >= target,
    )


def format_ratio(ratio: float) -> str:
    """Two decimals, rounded down, so that a ratio shown equal to its target meets it."""
    return f"{math.floor(ratio * 100) / 100:.2f}x"


def report(row: Row) -> Row:
    """Print a row as soon as it is measured, and return it."""
    ratio = "" if row.ratio is None else f", ratio {format_ratio(row.ratio)}"
    target = f" [{row.target}: {row.status}]" if row.target else ""
    print(f"  {row.name}: ours {row.ours}, baseline {row.baseline}{ratio}{target}", flush=True)
    return row


#: How the ratios of this file's table read.
LEGEND = "ratio = baseline time / objstore time (higher is better); the S3 ratios are informative."


def print_table(rows: list[Row], legend: str = LEGEND) -> None:
    header = ("measurement", "ours", "baseline", "ratio", "target", "result")
    lines = [
        (
            r.name,
            r.ours,
            r.baseline,
            "-" if r.ratio is None else format_ratio(r.ratio),
            r.target or "-",
            r.status,
        )
        for r in rows
    ]
    print_columns(header, lines, rows)
    print(legend)


def print_columns(header: tuple[str, ...], lines: list[tuple[str, ...]], rows: list[Row]) -> None:
    """``lines`` under ``header`` in aligned columns, then how many of ``rows``' targets were met."""
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    print()
    for line in [header, None, *lines, None]:
        if line is None:
            print(rule)
        else:
            print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip())
    missed = [r.name for r in rows if r.passed is False]
    met = sum(r.passed is True for r in rows)
    print(f"{met} targets met, {len(missed)} missed" + (f": {'; '.join(missed)}" if missed else ""))


# -- posix: objects ----------------------------------------------------------------


class RawTree:
    """The baseline: plain files under ``<root>/data``, written through ``<root>/tmp``."""

    def __init__(self, root: Path) -> None:
        self.data = str(root / "data")
        self.tmp = str(root / "tmp")
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self._count = 0

    def write(self, key: str, data: bytes) -> None:
        self._count += 1
        tmp = os.path.join(self.tmp, f"{self._count}.tmp")
        with open(tmp, "xb") as file:
            file.write(data)
        os.rename(tmp, os.path.join(self.data, key))

    def read(self, key: str) -> bytes:
        with open(os.path.join(self.data, key), "rb") as file:
            return file.read()


def bench_posix_objects(base: Path, size: int, count: int, reps: int, target: float) -> list[Row]:
    """Put then get ``count`` objects of ``size`` bytes, objstore against RawTree.

    Every put run writes new keys, in a folder of its own: a rename over an existing file
    makes ext4 flush that file to disk, and files removed just before make the next
    creations slow, which would time the disk instead of objstore. The folder of the run
    before is removed (untimed) only for large objects, to bound the disk space.
    """
    root = Path(tempfile.mkdtemp(prefix=f"objects-{size}-", dir=base))
    store = PosixStorage(root / "objstore")
    raw = RawTree(root / "raw")
    data = {"objstore": os.path.join(store.root, "data"), "raw": raw.data}
    names = [f"{i:05d}" for i in range(count)]
    payload = os.urandom(size)
    runs = {"objstore": 0, "raw": 0}

    def folder(contender: str) -> str:
        return f"run-{runs[contender]:03d}"

    def next_run(contender: str) -> Callable[[], None]:
        def prepare() -> None:
            if size >= MiB and runs[contender]:
                shutil.rmtree(os.path.join(data[contender], folder(contender)))
            runs[contender] += 1

        return prepare

    def ours_put() -> None:
        run = folder("objstore")
        for name in names:
            store.write(f"{run}/{name}", payload)

    def raw_put() -> None:
        run = folder("raw")
        os.mkdir(os.path.join(raw.data, run))
        for name in names:
            raw.write(f"{run}/{name}", payload)

    def ours_get() -> None:
        run = folder("objstore")
        for name in names:
            store.read_bytes(f"{run}/{name}")

    def raw_get() -> None:
        run = folder("raw")
        for name in names:
            raw.read(f"{run}/{name}")

    label = f"{format_size(size)} x{count}"
    try:
        put = race(
            {"objstore": ours_put, "raw": raw_put},
            reps,
            prepare={contender: next_run(contender) for contender in runs},
        )
        last = f"{folder('objstore')}/{names[-1]}", f"{folder('raw')}/{names[-1]}"
        if store.read_bytes(last[0]) != payload or raw.read(last[1]) != payload:
            raise RuntimeError("a stored object differs from what was written")
        get = race({"objstore": ours_get, "raw": raw_get}, reps)
    finally:
        store.close()
        shutil.rmtree(root)
    return [
        report(ratio_row(f"posix put {label}", put, "objstore", "raw", ops=count, target=target)),
        report(ratio_row(f"posix get {label}", get, "objstore", "raw", ops=count, target=target)),
    ]


# -- posix: listing ----------------------------------------------------------------


def make_files(data: str, keys: Iterable[str]) -> int:
    """Create an empty file for each key under ``data``; return how many."""
    count = 0
    made: set[str] = set()
    for key in keys:
        folder = os.path.dirname(key)
        if folder not in made:
            os.makedirs(os.path.join(data, folder), exist_ok=True)
            made.add(folder)
        os.close(os.open(os.path.join(data, key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        count += 1
    return count


def scandir_walk(top: str) -> list[str]:
    """The baseline: every file's path relative to ``top``, sorted."""
    paths: list[str] = []

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, f"{rel}{entry.name}/")
                else:
                    paths.append(rel + entry.name)

    walk(top, "")
    paths.sort()
    return paths


def scandir_stat_walk(top: str) -> list[tuple[str, int, int]]:
    """The baseline plus what an ObjectInfo needs: (path, size, mtime) of every file, sorted."""
    files: list[tuple[str, int, int]] = []

    def walk(folder: str, rel: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, f"{rel}{entry.name}/")
                else:
                    st = entry.stat(follow_symlinks=False)
                    files.append((rel + entry.name, st.st_size, st.st_mtime_ns))

    walk(top, "")
    files.sort()
    return files


def bench_posix_listing(base: Path, what: str, keys: list[str], reps: int, target: float | None) -> list[Row]:
    """List ``keys`` (created as empty files) with objstore and with scandir walks.

    ``list_keys`` (keys only) races the bare walk; ``list`` (size, time and etag of each
    object, one stat per file) races the walk that also stats every file.
    """
    root = Path(tempfile.mkdtemp(prefix="listing-", dir=base))
    try:
        store = PosixStorage(root)
        data = str(root / "data")
        print(f"  (creating {len(keys):,} files for {what})", flush=True)
        make_files(data, keys)
        with store:
            listed = [info.key for info in store.list()]
            if listed != sorted(keys) or list(store.list_keys()) != listed or scandir_walk(data) != listed:
                raise RuntimeError(f"{what}: objstore and the scandir walk do not list the created keys")
            best = race(
                {
                    "list_keys": lambda: sum(1 for _ in store.list_keys()),
                    "scandir": lambda: scandir_walk(data),
                    "list": lambda: sum(1 for _ in store.list()),
                    "scandir+stat": lambda: scandir_stat_walk(data),
                },
                reps,
            )
    finally:
        shutil.rmtree(root)
    return [
        report(ratio_row(f"posix list_keys {what}", best, "list_keys", "scandir", target=target)),
        report(ratio_row(f"posix list {what}, with info", best, "list", "scandir+stat")),
    ]


# -- streaming, measured in child processes ----------------------------------------------


def generated_chunks(size: int, chunk: int = STREAM_CHUNK) -> Iterator[bytes]:
    """``size`` bytes as fresh ``chunk``-sized bytes objects, so that holding on to them shows."""
    block = bytearray(os.urandom(chunk))
    for number, offset in enumerate(range(0, size, chunk)):
        block[:8] = number.to_bytes(8, "little")
        yield bytes(block[: min(chunk, size - offset)])


def _proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KiB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _open_store(spec: dict[str, Any]) -> Storage:
    backend = spec["backend"]
    if backend == "posix":
        return PosixStorage(spec["root"])
    if backend == "posixflat":
        return PosixFlatStorage(spec["root"])
    if backend == "s3":
        from objstore.s3 import S3Storage
        from tests.s3server import ACCESS_KEY, SECRET_KEY

        return S3Storage(
            spec["endpoint"],
            spec["bucket"],
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=False,
            region=S3_REGION,
        )
    raise ValueError(f"unknown backend {backend!r}")


def stream_child(spec_json: str) -> None:
    """The hidden sub-command: stream one object in or out, print the peak RSS growth as JSON."""
    spec = json.loads(spec_json)
    size: int = spec["size"]
    with _open_store(spec) as store:
        # A small round trip first, so that lazy imports and connections are not counted.
        store.write("stream/warm-up", generated_chunks(4 * KiB))
        store.read_bytes("stream/warm-up")
        store.delete("stream/warm-up")
        gc.collect()
        exact = _reset_peak_rss()
        before = _proc_status("VmRSS")
        start = time.perf_counter()
        if spec["direction"] == "in":
            store.write(STREAM_KEY, generated_chunks(size))
            moved = size
        else:
            moved = 0
            with store.read(STREAM_KEY) as stream:
                while chunk := stream.read(STREAM_CHUNK):
                    moved += len(chunk)
        seconds = time.perf_counter() - start
        # Without the reset, ru_maxrss covers the whole process life: a lower bound.
        peak = _proc_status("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB
    if moved != size:
        raise RuntimeError(f"streamed {moved} bytes, not {size}")
    limit = STREAM_LIMIT
    if spec["direction"] == "in" and spec["backend"] == "s3":
        # parts in flight, the one being filled, and slack: the bound docs/objstore.md states
        limit = (store.max_concurrency + 1) * store.part_size + STREAM_LIMIT  # type: ignore[attr-defined]
    print(json.dumps({"growth": max(peak - before, 0), "seconds": seconds, "exact": exact, "limit": limit}))


def measure_stream(spec: dict[str, Any]) -> Row:
    """Run ``stream_child`` in a fresh interpreter and turn its answer into a row."""
    command = [sys.executable, str(Path(__file__).resolve()), "--stream-child", json.dumps(spec)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the streaming child {spec} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    growth: int = result["growth"]
    limit: int = result["limit"]
    seconds: float = result["seconds"]
    rate = spec["size"] / MiB / seconds
    return report(
        Row(
            name=f"{spec['backend']} stream {spec['direction']} {format_size(spec['size'])}, peak RSS growth",
            ours=f"{growth / MiB:.1f} MiB{'' if result['exact'] else ' (lower bound)'} ({rate:.0f} MiB/s)",
            baseline="-",
            target=f"< {limit // MiB} MiB",
            passed=growth < limit,
        )
    )


def bench_posix_streaming(base: Path, size: int) -> list[Row]:
    rows: list[Row] = []
    for backend in ("posix", "posixflat"):
        root = Path(tempfile.mkdtemp(prefix=f"stream-{backend}-", dir=base))
        try:
            for direction in ("in", "out"):
                spec = {"backend": backend, "direction": direction, "size": size, "root": str(root)}
                rows.append(measure_stream(spec))
        finally:
            shutil.rmtree(root)
    return rows


# -- S3 against boto3 ----------------------------------------------------------------


def bench_s3_objects(store: S3Storage, client: Any, size: int, count: int, reps: int) -> list[Row]:
    payload = os.urandom(size)
    ours_keys = [f"objects-{size}/objstore/{i:05d}" for i in range(count)]
    boto_keys = [f"objects-{size}/boto3/{i:05d}" for i in range(count)]

    def ours_put() -> None:
        for key in ours_keys:
            store.write(key, payload)

    def boto_put() -> None:
        for key in boto_keys:
            client.put_object(Bucket=S3_BUCKET, Key=key, Body=payload)

    def ours_get() -> None:
        for key in ours_keys:
            store.read_bytes(key)

    def boto_get() -> None:
        for key in boto_keys:
            client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()

    label = f"{format_size(size)} x{count}"
    put = race({"objstore": ours_put, "boto3": boto_put}, reps)
    if store.read_bytes(ours_keys[-1]) != payload:
        raise RuntimeError("an S3 object differs from what was written")
    get = race({"objstore": ours_get, "boto3": boto_get}, reps)
    store.delete_many(ours_keys + boto_keys)
    return [
        report(ratio_row(f"s3 put {label}", put, "objstore", "boto3", ops=count)),
        report(ratio_row(f"s3 get {label}", get, "objstore", "boto3", ops=count)),
    ]


def bench_s3_listing(store: S3Storage, client: Any, count: int, reps: int) -> list[Row]:
    prefix = "listing/"
    keys = [f"{prefix}{i // 100:03d}/{i:06d}" for i in range(count)]
    print(f"  (creating {count:,} S3 objects)", flush=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(lambda key: client.put_object(Bucket=S3_BUCKET, Key=key, Body=b""), keys):
            pass

    def boto_list() -> list[str]:
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=S3_BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    if [info.key for info in store.list(prefix)] != keys or boto_list() != keys:
        raise RuntimeError("objstore or boto3 did not list the created S3 objects")
    best = race({"objstore": lambda: sum(1 for _ in store.list(prefix)), "boto3": boto_list}, reps)
    return [report(ratio_row(f"s3 list {count:,} keys", best, "objstore", "boto3"))]


def bench_s3(plan: Plan) -> list[Row]:
    """Everything that needs the local S3 server, which lives only inside this call."""
    import boto3  # type: ignore[import-untyped]

    from objstore.s3 import S3Storage
    from tests import s3server

    print("S3 (local moto server; ratios against boto3 are informative)", flush=True)
    server = s3server.start()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{server.endpoint}",
            aws_access_key_id=s3server.ACCESS_KEY,
            aws_secret_access_key=s3server.SECRET_KEY,
            region_name=S3_REGION,
        )
        client.create_bucket(Bucket=S3_BUCKET)
        store = S3Storage(
            server.endpoint,
            S3_BUCKET,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
            secure=False,
            region=S3_REGION,
        )
        with store:
            rows = bench_s3_objects(store, client, 4 * KiB, plan.s3_small_count, plan.s3_reps)
            rows += bench_s3_objects(store, client, 16 * MiB, plan.s3_large_count, plan.s3_reps)
            rows += bench_s3_listing(store, client, plan.s3_list_keys, plan.s3_reps)
        for direction in ("in", "out"):
            spec = {
                "backend": "s3",
                "direction": direction,
                "size": plan.stream_size,
                "endpoint": server.endpoint,
                "bucket": S3_BUCKET,
            }
            rows.append(measure_stream(spec))
        client.delete_object(Bucket=S3_BUCKET, Key=STREAM_KEY)
    finally:
        server.stop()
    return rows


# -- main --------------------------------------------------------------------------------


def run(plan: Plan, base: Path) -> list[Row]:
    rows: list[Row] = []
    print("posix objects (objstore against temp file + rename, open + read)", flush=True)
    rows += bench_posix_objects(base, 4 * KiB, plan.small_count, plan.small_reps, target=0.8)
    rows += bench_posix_objects(base, 16 * MiB, plan.large_count, plan.large_reps, target=0.95)

    print("posix listing (objstore against a sorted os.scandir walk)", flush=True)
    nested = [f"d{f:03d}/obj-{i:05d}" for f in range(plan.list_folders) for i in range(plan.list_per_folder)]
    rows += bench_posix_listing(
        base, f"{len(nested):,} keys ({plan.list_folders} folders)", nested, plan.list_reps, 0.5
    )
    flat = [f"obj-{i:06d}" for i in range(plan.flat_keys)]
    rows += bench_posix_listing(base, f"{len(flat):,} keys (flat)", flat, plan.list_reps, None)

    print(f"streaming {format_size(plan.stream_size)} (peak RSS growth of a fresh child process)", flush=True)
    rows += bench_posix_streaming(base, plan.stream_size)

    rows += bench_s3(plan)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test, under 2 minutes)")
    parser.add_argument("--dir", type=Path, help="the folder for temporary files (default: the system's)")
    parser.add_argument("--stream-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stream_child is not None:
        stream_child(args.stream_child)
        return 0

    plan = QUICK if args.quick else FULL
    reps = (plan.small_reps, plan.large_reps, plan.list_reps, plan.s3_reps)
    print(
        f"objstore benchmark ({'quick' if args.quick else 'full'}): Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; each time is the best of {min(reps)} to {max(reps)} interleaved repetitions",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="objstore-bench-", dir=args.dir) as base:
        rows = run(plan, Path(base))
    print_table(rows)
    print(f"total time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
