"""A storage that fails answers 503 ``unavailable`` (the client may retry), not 500 ``internal``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import urllib3

from runstore.contract.clients import RunServiceClient
from runstore.contract.errors import ErrorKind, RemoteServiceError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import RunConfig, Step, StepKind, TaskConfig
from runstore.contract.routes import RunServiceRoutes as R
from runstore.runservice.api import RunServiceApp
from runstore.runservice.service import RunService
from tests.conftest import ProxiedStorageFactory
from tests.faultproxy import Fault, FaultProxy, Rule

ONE = RunConfig([TaskConfig("build", [Step(StepKind.RUN, command="make")])])


@pytest.fixture
def served(proxied_storage: ProxiedStorageFactory) -> Iterator[tuple[RunService, str]]:
    service = RunService(proxied_storage(retries=0, timeout=5)).start(loops=False)
    server = ServerThread(RunServiceApp(service)).start()
    yield service, server.url
    server.stop()
    service.stop()


def call(method: str, url: str) -> tuple[int, dict[str, object]]:
    response = urllib3.request(method, url, retries=False)
    return response.status, json.loads(response.data)


@pytest.mark.parametrize("fault", [Fault.STATUS_503, Fault.RESET])
def test_a_failing_store_answers_503_unavailable_until_it_recovers(
    served: tuple[RunService, str], fault_proxy: FaultProxy, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    service, url = served
    run = service.runs.create(ONE, "/project/p1/branch/main")
    service.state.runs.forget(run.id)  # read from the store, as a finished run is
    path = R.get_run.path(run_id=run.id)
    fault_proxy.plan(Rule(fault))

    status, answer = call("GET", url + path)
    assert status == 503
    assert answer["kind"] == "unavailable"
    message = str(answer["message"])
    assert "storage" in message
    assert fault_proxy.endpoint not in message and "objstore-test-" not in message  # no internals
    assert any(record.exc_info for record in caplog.records)  # the original is logged, with its traceback

    client = RunServiceClient(url)
    try:
        with pytest.raises(RemoteServiceError) as raised:
            client.get_run(run.id)
        assert raised.value.kind is ErrorKind.UNAVAILABLE and raised.value.retryable
        assert raised.value.status == 503

        fault_proxy.clear()
        status, answer = call("GET", url + path)
        assert status == 200 and answer["id"] == run.id
        assert client.get_run(run.id).id == run.id
    finally:
        client.close()
