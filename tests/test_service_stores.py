"""The runservice's store from the command line (a URL or a config file), and an executor that
advertises a URL other than its bound address."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from objstore import MemoryStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.model import RunConfig, Step, StepKind, TaskConfig, TaskStatus
from runstore.executor.executor import Executor
from runstore.runservice.api import serve
from runstore.runservice.service import RunService
from tests.conftest import S3Endpoint
from tests.test_processes import ROOT
from tests.test_service_processes import (
    CLIENT_TOKEN,
    TOKENS_FILE,
    Store,
    aws_environment,
    create_run,
    read_log,
    start,
    start_executor,
    start_runservice,
    wait_finished,
)

ONE_TASK = RunConfig([TaskConfig("hello", [Step(StepKind.RUN, command="echo hello-from-the-task")])])


def runservice_fails(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m runstore runservice ARGS``, expected to exit at once (no ``AWS_*`` variable
    but those of ``env``)."""
    if env is None:
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "runstore", "runservice", "--listen", "127.0.0.1:0", "--no-tokens", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("form", ["url", "type"])
def test_the_store_from_a_config_file(
    form: str, s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], tmp_path: Path
) -> None:
    bucket = s3_bucket()
    endpoint = f"{'https' if s3_endpoint.secure else 'http'}://{s3_endpoint.endpoint}"
    config = (
        {"url": f"s3://{bucket}/configured"}
        if form == "url"
        else {"type": "s3", "endpoint": endpoint, "bucket": bucket, "prefix": "configured"}
    )
    path = tmp_path / "store.json"
    path.write_text(json.dumps(config))
    root = s3_endpoint.storage(bucket)
    store = Store(("--store-config", str(path)), aws_environment(s3_endpoint, tmp_path / "home"), root)
    service = start_runservice(store)
    client = RunServiceClient(service.url, token=CLIENT_TOKEN)
    try:
        run = create_run(client, ONE_TASK)
        keys = store.keys()
        assert "configured/runservice/lease" in keys and f"configured/runservice/runs/{run.id}.json" in keys
        assert all(key.startswith("configured/") for key in keys)
    finally:
        client.close()
        service.stop()
        root.close()


def test_a_file_url_is_a_posix_store(tmp_path: Path) -> None:
    folder = tmp_path / "by url"  # %-encoded in the URL
    service = start(
        "runstore",
        "runservice",
        "--store",
        folder.as_uri(),
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        str(TOKENS_FILE),
    )
    try:
        assert folder.is_dir() and any(folder.rglob("lease"))
    finally:
        service.stop()


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "cause"),
    [
        (lambda _: ["--store", "ftp://host/x"], "unknown scheme 'ftp'"),
        (lambda _: ["--store", "s3://"], "an s3 URL names a bucket"),
        (lambda _: ["--store", "s3:bucket"], "an s3 URL names a bucket"),
        (lambda _: ["--store", "s3://b/p?secret_key=hidden"], "credentials (secret_key) do not go in a URL"),
        (lambda _: ["--store", "s3://b?retries=x"], "option 'retries' is an int of at least 0, not 'x'"),
        (lambda _: ["--store", "file://otherhost/x"], "'otherhost' is not this host"),
        (lambda t: ["--store-config", str(t / "missing.json")], "missing.json': No such file or directory"),
        (lambda t: ["--store-config", str(t)], "': Is a directory"),
        (
            lambda t: ["--store-config", _write(t, "c.json", "{oops")],
            "c.json' is not JSON: Expecting property",
        ),
        (
            lambda t: ["--store-config", _write(t, "c.json", "[1]")],
            "c.json': a storage configuration is a mapping",
        ),
        (
            lambda t: ["--store-config", _write(t, "c.json", '{"type": "s3", "bucket": "b"}')],
            "c.json': s3 storage configuration misses field(s): endpoint",
        ),
        (
            lambda t: ["--store-config", _write(t, "c.json", '{"type": "posixflat", "path": "x"}')],
            "'posixflat' is internal",
        ),
        (
            lambda t: ["--store-config", _write(t, "c.json", '{"url": "s3://b", "pth": "x"}')],
            "unknown field(s): pth",
        ),
    ],
)
def test_a_bad_store_is_a_one_line_error(
    make_args: Callable[[Path], list[str]], cause: str, tmp_path: Path
) -> None:
    done = runservice_fails(*make_args(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("runservice: ") and done.stderr.count("\n") == 1, done.stderr
    assert cause in done.stderr
    assert "hidden" not in done.stderr and done.stdout == ""


def test_store_and_store_config_exclude_each_other(tmp_path: Path) -> None:
    done = runservice_fails("--store", str(tmp_path), "--store-config", str(tmp_path / "c.json"))
    assert done.returncode == 2
    assert "argument --store-config: not allowed with argument --store" in done.stderr


def test_a_missing_bucket_is_a_one_line_error(s3_endpoint: S3Endpoint, tmp_path: Path) -> None:
    env = aws_environment(s3_endpoint, tmp_path / "home")
    bucket = f"objstore-test-{secrets.token_hex(6)}"  # never made
    done = runservice_fails("--store", f"s3://{bucket}/ci", env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"runservice: the store failed: S3 bucket {bucket!r} does not exist" in done.stderr


class Forwarder:
    """A TCP forwarder listening on ``host``: it sends each connection on to ``target`` (set once
    known) and counts them."""

    def __init__(self, host: str) -> None:
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.url = f"http://{host}:{self._listener.getsockname()[1]}"
        self.target: tuple[str, int] | None = None
        self.connections = 0
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def __enter__(self) -> Forwarder:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for sock in [*self._sockets, self._listener]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.target is None:
                client.close()
                continue
            self.connections += 1
            upstream = socket.create_connection(self.target, timeout=30)
            client.settimeout(30)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_the_runservice_fetches_through_the_advertised_url(tmp_path: Path) -> None:
    runservice = start(
        "runstore",
        "runservice",
        "--store",
        str(tmp_path / "store"),
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        str(TOKENS_FILE),
    )
    client = RunServiceClient(runservice.url, token=CLIENT_TOKEN)
    try:
        with Forwarder("127.0.0.2") as forwarder:
            executor = start_executor(runservice, tmp_path / "executor", 2, "--advertise-url", forwarder.url)
            try:
                host, port = executor.url.removeprefix("http://").rsplit(":", 1)
                assert host == "127.0.0.1" and forwarder.url != executor.url
                forwarder.target = (host, int(port))
                run = wait_finished(client, create_run(client, ONE_TASK).id)
                assert run.task("hello").status is TaskStatus.SUCCESS and run.task("hello").fetched
                assert b"hello-from-the-task" in read_log(client, run.id, "hello", 0)
                assert forwarder.connections >= 1  # the fetches went to the advertised URL
            finally:
                executor.stop()
    finally:
        client.close()
        runservice.stop()


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.2:80", "127.0.0.2:80", "http://", "http://h:0", "http://h:x", "http://u@h", "http://h?q"],
)
def test_an_advertise_url_is_http_with_a_host(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="an advertise URL is http") as caught:
        Executor("http://127.0.0.1:1", tmp_path, executor_id="ex1", advertise_url=url)
    assert repr(url) in str(caught.value)
    command = ["runstore", "executor", "--runservice", "http://127.0.0.1:1", "--data", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", *command, "--id", "ex1", "--advertise-url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "argument --advertise-url: an advertise URL is http" in done.stderr


def test_the_executor_reports_its_advertise_url(tmp_path: Path) -> None:
    service = RunService(MemoryStorage(), interval=0.1)
    server = serve(service)
    advertised = Executor(server.url, tmp_path, executor_id="ex1", advertise_url="https://ex1.example:8443/x")
    plain = Executor(server.url, tmp_path, executor_id="ex2")
    try:
        advertised.run_once()
        plain.run_once()
        assert service.state.executors.get("ex1").listen_url == "https://ex1.example:8443/x"
        assert service.state.executors.get("ex2").listen_url == plain.url == plain.listen_url
        assert plain.url.startswith("http://127.0.0.1:")
    finally:
        advertised.stop()
        plain.stop()
        server.stop()
        service.stop()
