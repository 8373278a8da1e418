"""A local S3 server for the tests and benchmarks: moto's, on 127.0.0.1, in a subprocess.

moto checks a conditional PUT and then stores it in two steps; a lock around every
request makes each one atomic, as on a real S3 server, so compare-and-swap races behave
as they would there. Run as ``python -m tests.s3server``: it binds a free port on
127.0.0.1 (or ``--port``), prints ``PORT <n>`` once serving, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import attrs

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


def _serialized(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def serialized_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            body = app(environ, start_response)
            try:
                return list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serialized_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = _serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


@attrs.frozen
class RunningServer:
    """A started server: ``endpoint`` is ``host:port``."""

    process: subprocess.Popen[str]
    endpoint: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(timeout: float = 60.0) -> RunningServer:
    """Start the server in a subprocess and wait until it listens."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3server"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
    finally:
        timer.cancel()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the S3 test server did not start (exit code {process.wait()})")
    return RunningServer(process, f"127.0.0.1:{int(line.split()[1])}")


if __name__ == "__main__":
    main()
