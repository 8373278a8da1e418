"""One owner at a time: a stalled runservice changes nothing once it may have lost its lease,
a stalled loop keeps the lease, SIGTERM hands it over at once, and /healthz tells."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from objstore import MemoryStorage, PosixStorage
from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, LeaseLostError, RemoteServiceError
from runstore.contract.http.client import UnreachableError
from runstore.contract.model import ExecutorStatus, RunConfig, Step, StepKind, TaskConfig
from runstore.runservice.api import serve
from runstore.runservice.lease import LEASE_KEY, Lease
from runstore.runservice.service import RunService
from tests.conftest import ProxiedStorageFactory
from tests.faultproxy import Fault, FaultProxy, Rule
from tests.test_service_processes import CLIENT_TOKEN, Service, Store, start_runservice

ONE = RunConfig([TaskConfig("hello", [Step(StepKind.RUN, command="echo hello")])])
GROUP = "/project/p1/branch/main"
STATUS = ExecutorStatus("http://127.0.0.1:1", 1)


def posix_store(tmp_path: Path) -> Store:
    return Store(
        ("--store", str(tmp_path / "store")), dict(os.environ), PosixStorage(str(tmp_path / "store"))
    )


def run_documents(store: Store) -> list[str]:
    return store.keys("runservice/runs/")


def test_a_runservice_stalled_past_its_lease_changes_nothing_once_another_took_over(tmp_path: Path) -> None:
    """Two processes: the first is stopped (SIGSTOP) past its lease; the second takes the
    store over; the first, resumed, refuses every change (503) until it notices and exits
    (a request may come after that: then it is not answered at all)."""
    store = posix_store(tmp_path)
    first = start_runservice(store, "--lease-ttl", "3")
    second: Service | None = None
    client = RunServiceClient(first.url, timeout=10, token=CLIENT_TOKEN)
    try:
        client.create_run(ONE, GROUP)
        os.kill(first.process.pid, signal.SIGSTOP)
        began = time.monotonic()
        second = start_runservice(store, "--lease-ttl", "3")  # waits for the first's lease to expire
        assert time.monotonic() - began < 15
        before = run_documents(store)
        os.kill(first.process.pid, signal.SIGCONT)
        resumed = RunServiceClient(
            first.url, timeout=10, token=CLIENT_TOKEN
        )  # its old connections may be gone
        try:
            resumed.create_run(ONE, GROUP)
        except RemoteServiceError as exc:  # it refused: its lease may have lapsed
            assert (exc.kind, exc.status) == (ErrorKind.UNAVAILABLE, 503)
            assert "does not hold the store's lease" in exc.remote_message
        except UnreachableError:
            pass  # or it had already noticed, and stopped serving
        else:
            raise AssertionError("a runservice that lost its lease created a run")
        finally:
            resumed.close()
        assert run_documents(store) == before
        assert first.process.wait(timeout=15) == 1  # it noticed, and stopped
        other = RunServiceClient(second.url, token=CLIENT_TOKEN)
        try:
            created = other.create_run(ONE, GROUP)
        finally:
            other.close()
        assert f"runservice/runs/{created.id}.json" in run_documents(store)
    finally:
        client.close()
        if first.process.poll() is None:
            os.kill(first.process.pid, signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()


def test_sigterm_hands_the_lease_over_at_once(tmp_path: Path) -> None:
    store = posix_store(tmp_path)
    first = start_runservice(store, "--lease-ttl", "60")
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=30) == 0
    first.stop()
    began = time.monotonic()
    second = start_runservice(store, "--lease-ttl", "60", "--no-wait")  # no 60 s wait: it was released
    try:
        assert time.monotonic() - began < 10
    finally:
        second.stop()


def test_a_stalled_loop_keeps_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the loop thread renewed the lease, so one slow pass let it lapse."""
    storage = MemoryStorage()
    service = RunService(storage, interval=0.05, lease_ttl=timedelta(seconds=1.5))
    stalled = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        stalled.set()
        release.wait(10)

    monkeypatch.setattr(service.scheduler, "schedule_once", stuck)
    service.start()
    try:
        assert stalled.wait(5)
        time.sleep(3)  # twice the lease's time, the loop stuck all along
        assert service.lease.holds()
        assert not Lease(storage, "other", timedelta(seconds=1.5)).try_acquire()
        service.runs.create(ONE, GROUP)  # the handlers still change the store
    finally:
        release.set()
        service.stop()


def test_a_lost_lease_refuses_every_change_and_health_says_so() -> None:
    storage = MemoryStorage()
    service = RunService(storage, lease_ttl=timedelta(seconds=30))
    server = serve(service)
    client = RunServiceClient(server.url)
    try:
        assert client.health().ok
        run = client.create_run(ONE, GROUP)
        storage.write(LEASE_KEY, b'{"owner": "usurper", "expires": "2999-01-01T00:00:00+00:00"}')
        deadline = time.monotonic() + 30
        while not service.lost.is_set():  # the next renewal sees the lease changed
            assert time.monotonic() < deadline
            time.sleep(0.1)
        keys = sorted(storage.list_keys())
        for attempt in (lambda: client.create_run(ONE, GROUP), lambda: client.put_executor("ex1", STATUS)):
            with pytest.raises(RemoteServiceError) as refused:
                attempt()
            assert refused.value.kind is ErrorKind.UNAVAILABLE
        with pytest.raises(LeaseLostError):
            service.runs.create(ONE, GROUP)
        assert sorted(storage.list_keys()) == keys
        with pytest.raises(RemoteServiceError) as unhealthy:
            client.health()
        assert unhealthy.value.status == 503 and "lease held: False" in unhealthy.value.remote_message
        assert client.get_run(run.id).id == run.id  # reads are still served
    finally:
        client.close()
        server.stop()
        service.stop()


def test_health_is_refused_while_the_store_fails(
    proxied_storage: ProxiedStorageFactory, fault_proxy: FaultProxy
) -> None:
    service = RunService(proxied_storage(retries=0, timeout=5), lease_ttl=timedelta(seconds=30))
    server = serve(service)
    client = RunServiceClient(server.url)
    try:
        assert client.health().ok
        fault_proxy.plan(Rule(Fault.STATUS_503))
        with pytest.raises(RemoteServiceError) as unhealthy:
            client.health()
        assert unhealthy.value.status == 503 and "store reached: False" in unhealthy.value.remote_message
        fault_proxy.clear()
        assert client.health().ok
    finally:
        client.close()
        server.stop()
        service.stop()
