"""Client CPU time per small S3 request: objstore's S3Storage against obstore and boto3.

Run from the repository root::

    python bench/request_cpu_bench.py           # full run, about a minute
    python bench/request_cpu_bench.py --quick   # a few seconds (the smoke test)

A local moto server (``tests/s3server.py``) runs in a subprocess, so its work is not
counted. For 4 KiB puts (each to a new key) and 4 KiB gets (``read_bytes``), each client
runs ``--count`` requests per repetition; the figure is the process CPU time
(``time.process_time``: user and system time of every thread of this process, so
obstore's Rust threads count too) divided by the number of requests, the best of
``--reps`` repetitions interleaved between the clients so that drift hits all of them.
Wall time per request is shown for information. The target (issue 10, section 3): our
CPU time per request at most 1.5x obstore's ``S3Store``. A missed target is reported,
not an error: the exit code is 0 unless something fails.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from objstore.s3 import S3Storage  # noqa: E402
from tests import s3server  # noqa: E402

BUCKET = "objstore-request-bench"
REGION = "us-east-1"
SIZE = 4 << 10
#: Our CPU time per request may be at most this many times obstore's.
TARGET = 1.5
CLIENTS = ("objstore", "obstore", "boto3")


@dataclass(frozen=True)
class Cost:
    """The best CPU and wall time per request of one client for one operation, in seconds."""

    cpu: float
    wall: float


class Clients:
    """The three clients on one server, each with a put and a get of one key."""

    def __init__(self, endpoint: str) -> None:
        import boto3  # type: ignore[import-untyped]
        from obstore.store import S3Store

        self.ours = S3Storage(
            endpoint,
            BUCKET,
            access_key=s3server.ACCESS_KEY,
            secret_key=s3server.SECRET_KEY,
            secure=False,
            region=REGION,
        )
        self.obstore = S3Store(
            BUCKET,
            endpoint=f"http://{endpoint}",
            access_key_id=s3server.ACCESS_KEY,
            secret_access_key=s3server.SECRET_KEY,
            region=REGION,
            client_options={"allow_http": True},
        )
        self.boto3 = boto3.client(
            "s3",
            endpoint_url=f"http://{endpoint}",
            aws_access_key_id=s3server.ACCESS_KEY,
            aws_secret_access_key=s3server.SECRET_KEY,
            region_name=REGION,
        )
        self.boto3.create_bucket(Bucket=BUCKET)

    def put(self, client: str) -> Callable[[str, bytes], object]:
        import obstore

        return {
            "objstore": lambda key, data: self.ours.write(key, data),
            "obstore": lambda key, data: obstore.put(self.obstore, key, data),
            "boto3": lambda key, data: self.boto3.put_object(Bucket=BUCKET, Key=key, Body=data),
        }[client]

    def get(self, client: str) -> Callable[[str], bytes]:
        import obstore

        return {
            "objstore": lambda key: self.ours.read_bytes(key),
            "obstore": lambda key: bytes(obstore.get(self.obstore, key).bytes()),
            "boto3": lambda key: self.boto3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
        }[client]

    def close(self) -> None:
        self.ours.close()


def _timed(run: Callable[[], None], count: int) -> Cost:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return Cost((time.process_time() - cpu) / count, (time.perf_counter() - wall) / count)


def race(runs: dict[str, Callable[[int], Callable[[], None]]], count: int, reps: int) -> dict[str, Cost]:
    """The best CPU and wall time per request of each client over ``reps`` interleaved repetitions.

    ``runs[name](rep)`` makes the run of repetition ``rep`` (-1: the untimed warm-up).
    """
    names = list(runs)
    for name in names:
        runs[name](-1)()
    best = {name: Cost(math.inf, math.inf) for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            cost = _timed(runs[name](rep), count)
            best[name] = Cost(min(best[name].cpu, cost.cpu), min(best[name].wall, cost.wall))
    return best


def bench_put(clients: Clients, count: int, reps: int) -> dict[str, Cost]:
    payload = os.urandom(SIZE)

    def run(name: str) -> Callable[[int], Callable[[], None]]:
        put = clients.put(name)

        def make(rep: int) -> Callable[[], None]:
            keys = [f"put/{name}/{rep + 1}/{i:05d}" for i in range(count)]

            def go() -> None:
                for key in keys:
                    put(key, payload)

            return go

        return make

    return race({name: run(name) for name in CLIENTS}, count, reps)


def bench_get(clients: Clients, count: int, reps: int) -> dict[str, Cost]:
    payload = os.urandom(SIZE)
    keys = [f"get/{i:05d}" for i in range(count)]
    for key in keys:
        clients.ours.write(key, payload)

    def run(name: str) -> Callable[[int], Callable[[], None]]:
        get = clients.get(name)
        if get(keys[0]) != payload:
            raise RuntimeError(f"{name} read back other bytes than were written")

        def make(rep: int) -> Callable[[], None]:
            def go() -> None:
                for key in keys:
                    get(key)

            return go

        return make

    return race({name: run(name) for name in CLIENTS}, count, reps)


def report(operation: str, best: dict[str, Cost]) -> float:
    """Print one operation's figures; return ours / obstore in CPU time."""
    print(f"4 KiB {operation}, per request (best CPU / best wall):")
    for name in CLIENTS:
        cost = best[name]
        print(f"  {name:<9} {cost.cpu * 1e6:8.1f} us CPU  {cost.wall * 1e6:8.1f} us wall")
    ratio = best["objstore"].cpu / best["obstore"].cpu
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"  objstore/obstore CPU {ratio:.2f}x [target <= {TARGET:.1f}x: {verdict}], "
        f"objstore/boto3 CPU {best['objstore'].cpu / best['boto3'].cpu:.2f}x",
        flush=True,
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few requests (a smoke test, a few seconds)")
    parser.add_argument("--count", type=int, help="requests per repetition (default 300, quick 30)")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 7, quick 2)")
    args = parser.parse_args(argv)
    count = args.count or (30 if args.quick else 300)
    reps = args.reps or (2 if args.quick else 7)
    print(
        f"request CPU benchmark ({'quick' if args.quick else 'full'}): Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {count} requests a repetition, best of {reps} interleaved repetitions",
        flush=True,
    )
    server = s3server.start()
    try:
        clients = Clients(server.endpoint)
        try:
            ratios = {"put": report("put", bench_put(clients, count, reps))}
            ratios["get"] = report("get", bench_get(clients, count, reps))
        finally:
            clients.close()
    finally:
        server.stop()
    summary = ", ".join(f"{operation} {ratio:.2f}x" for operation, ratio in ratios.items())
    print(f"objstore CPU per request / obstore's: {summary} (target <= {TARGET:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
