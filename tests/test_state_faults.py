"""The run service's documents and lease on S3 when a conditional write's outcome is unknown."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from objstore import S3Storage
from runstore.runservice.lease import Lease
from runstore.runservice.state import Documents
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, Rule

Factory = Callable[..., S3Storage]


@attrs.frozen
class Note:
    """A document whose change (add a name once) is idempotent, as the run service's are."""

    seen: list[str]


def adding(name: str) -> Callable[[Note], Note | None]:
    return lambda note: None if name in note.seen else Note([*note.seen, name])


def documents(storage: S3Storage) -> Documents[Note]:
    return Documents(storage, "notes", Note)


@pytest.mark.parametrize("fault", [Fault.RESET, Fault.RESET_AFTER, Fault.STATUS_500_AFTER])
def test_an_update_overtaken_after_a_lost_answer_is_applied_once(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, fault: Fault
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01)
    ours, other = documents(s3), documents(s3_endpoint.storage(s3.bucket))
    ours.create("n", Note([]))
    fault_proxy.plan(
        Rule(fault, method="PUT", has_header="if-match", times=1, then=lambda: other.update("n", adding("b")))
    )
    ours.update("n", adding("a"))
    assert fault_proxy.counts() == {fault.name: 1}
    assert sorted(ours.get("n").seen) == ["a", "b"]  # each change once, none lost


def test_a_create_overtaken_after_a_lost_answer_succeeds(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01)
    ours, other = documents(s3), documents(s3_endpoint.storage(s3.bucket))
    fault_proxy.plan(
        Rule(
            Fault.RESET_AFTER,
            method="PUT",
            has_header="if-none-match",
            times=1,
            then=lambda: other.update("n", adding("b")),
        )
    )
    ours.create("n", Note(["a"]))  # the document exists: it was this create's, then changed
    assert ours.get("n").seen == ["a", "b"]


def test_a_renewal_with_an_unknown_outcome_keeps_the_lease(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    s3 = proxied_storage(retries=1, backoff=0.01)
    lease = Lease(s3, "runservice-1")
    lease.acquire(wait=False)
    # The renewal lands but its answer is lost, and reading it back fails too.
    fault_proxy.plan(
        Rule(Fault.STATUS_500_AFTER, method="PUT", has_header="if-match", times=1),
        Rule(Fault.STATUS_503, method="HEAD", times=2),
    )
    lease.renew()
    assert fault_proxy.counts() == {"STATUS_500_AFTER": 1, "STATUS_503": 2}
    assert lease.holder() == "runservice-1"
    lease.renew()  # the lease's etag is known again
    assert not Lease(s3, "runservice-2").try_acquire()
