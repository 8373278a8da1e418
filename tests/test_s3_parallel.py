"""Multipart writes with parts in flight at once (``max_concurrency``): same object, bounded
memory, and every failure still aborts the upload."""

from __future__ import annotations

import pickle
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore import (
    AlreadyExistsError,
    ConfigError,
    InvalidArgumentError,
    PrefixedStorage,
    RemoteError,
    S3Storage,
    from_config,
    from_url,
)
from objstore.s3 import deadline as s3_deadline
from tests.awsenv import isolate
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, InFlight, Rule
from tests.test_s3_faults import SourceFailed, chunks, pending_uploads

PART = 5 << 20
Factory = Callable[..., S3Storage]


def part_rule(hook: Callable[[], object]) -> Rule:
    """Every part upload, answered after ``hook`` returns (the proxy's stall is short)."""
    return Rule(Fault.STALL_HEADERS, method="PUT", query="partNumber", then=hook)


def data(parts: int) -> bytes:
    return b"".join(chunks(parts * PART - 1000))


# -- the same object ---------------------------------------------------------------------


def test_a_parallel_write_stores_what_a_sequential_one_does(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> None:
    bucket = s3_bucket()
    one = s3_endpoint.storage(bucket, part_size=PART, max_concurrency=1)
    four = s3_endpoint.storage(bucket, part_size=PART, max_concurrency=4)
    expected = data(6)
    sequential = one.write("one", chunks(len(expected)))
    parallel = four.write("four", chunks(len(expected)))
    assert parallel == sequential and parallel.endswith("-6")  # the same parts, in the same order
    assert four.read_bytes("four") == expected  # checked against the etag, part size from the metadata
    head = s3_endpoint.boto().head_object(Bucket=bucket, Key="four")
    assert head["Metadata"]["objstore-part-size"] == str(PART)


def test_a_parallel_conditional_write_keeps_its_identifier_and_early_check(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> None:
    s3 = s3_endpoint.storage(s3_bucket(), part_size=PART, max_concurrency=3)
    etag = s3.write("big", chunks(4 * PART), if_none_match=True)
    head = s3_endpoint.boto().head_object(Bucket=s3.bucket, Key="big")
    assert head["Metadata"]["objstore-write"] and etag.endswith("-4")
    consumed: list[int] = []

    def source() -> Iterator[bytes]:
        for chunk in chunks(4 * PART):
            consumed.append(len(chunk))
            yield chunk

    with pytest.raises(AlreadyExistsError):
        s3.write("big", source(), if_none_match=True)
    assert sum(consumed) < 2 * PART  # refused before a second part was read
    assert pending_uploads(s3, s3_endpoint) == []


def test_parts_are_sent_from_workers_under_the_whole_request_deadline(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = s3_endpoint.storage(s3_bucket(), part_size=PART, max_concurrency=3, timeout=9)
    seen: list[tuple[str, float | None]] = []
    request = s3._request

    def watched(method: str, key: str | None, **kwargs: Any) -> Any:
        if "partNumber" in (kwargs.get("query") or {}):
            alarm = getattr(s3_deadline._current, "alarm", None)
            left = None if alarm is None else alarm.deadline - time.monotonic()
            seen.append((threading.current_thread().name, left))
        return request(method, key, **kwargs)

    monkeypatch.setattr(s3, "_request", watched)
    s3.write("big", chunks(3 * PART))
    assert len(seen) == 3
    for thread, left in seen:
        assert thread.startswith("objstore-s3-part") and left is not None and 0 < left <= 9


# -- parts in flight -----------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3, 6])
def test_up_to_max_concurrency_parts_are_in_flight(
    proxied_storage: Factory, fault_proxy: FaultProxy, concurrency: int
) -> None:
    fault_proxy.stall_limit = 0.01
    s3 = proxied_storage(part_size=PART, max_concurrency=concurrency)
    in_flight = InFlight(concurrency)
    fault_proxy.plan(part_rule(in_flight))
    s3.write("big", chunks(6 * PART))
    print(f"\nmax_concurrency={concurrency}: at most {in_flight.most} parts in flight")
    assert in_flight.seen == 6 and in_flight.most == concurrency
    fault_proxy.clear()
    assert s3.read_bytes("big") == b"".join(chunks(6 * PART))


def test_stalled_parts_overlap(proxied_storage: Factory, fault_proxy: FaultProxy) -> None:
    """Six parts, each answered 0.3 s late: one at a time takes their sum, six at once about one."""
    fault_proxy.stall_limit = 0.3
    fault_proxy.plan(Rule(Fault.STALL_HEADERS, method="PUT", query="partNumber"))
    elapsed = {}
    for concurrency in (1, 6):
        s3 = proxied_storage(part_size=PART, max_concurrency=concurrency)
        started = time.monotonic()
        s3.write("big", chunks(6 * PART))
        elapsed[concurrency] = time.monotonic() - started
    print(f"\n6 parts stalled 0.3 s each: {elapsed[1]:.2f} s one at a time, {elapsed[6]:.2f} s six at once")
    assert fault_proxy.counts() == {"STALL_HEADERS": 12}
    assert elapsed[1] >= 1.8
    assert elapsed[6] < elapsed[1] - 0.9


def test_memory_stays_bounded_by_the_parts_in_flight(
    s3_endpoint: S3Endpoint, s3_bucket: Callable[[], str]
) -> None:
    s3 = s3_endpoint.storage(s3_bucket(), part_size=PART, max_concurrency=2)
    tracemalloc.start()
    try:
        etag = s3.write("big", chunks(16 * PART))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n16 parts of 5 MiB, max_concurrency=2: peak {peak / PART:.2f} parts traced")
    assert etag.endswith("-16")
    assert peak < 4 * PART


# -- failures abort the upload ---------------------------------------------------------------


def test_a_failed_part_aborts_the_upload(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    fault_proxy.stall_limit = 0.01
    s3 = proxied_storage(part_size=PART, max_concurrency=3, retries=0)
    in_flight = InFlight(3, hold=0.5)
    fault_proxy.plan(
        Rule(Fault.STATUS_503, method="PUT", query="partNumber", skip=3, times=1),
        part_rule(in_flight),
    )
    consumed: list[int] = []

    def source() -> Iterator[bytes]:
        for chunk in chunks(12 * PART):
            consumed.append(len(chunk))
            yield chunk

    with pytest.raises(RemoteError) as caught:
        s3.write("big", source())
    assert caught.value.status == 503
    assert sum(consumed) < 12 * PART  # the source was not read to its end
    assert pending_uploads(s3, s3_endpoint) == []
    assert not s3.exists("big")


@pytest.mark.parametrize("error", [SourceFailed("disk gone"), KeyboardInterrupt()])
def test_a_source_that_raises_with_parts_in_flight_aborts_the_upload(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, error: BaseException
) -> None:
    fault_proxy.stall_limit = 0.01
    s3 = proxied_storage(part_size=PART, max_concurrency=4, retries=2, backoff=0.01)
    in_flight = InFlight(4, hold=0.5)
    fault_proxy.plan(
        part_rule(in_flight),
        Rule(Fault.STATUS_503, method="DELETE", times=1, then=lambda: in_flight.events.append("abort")),
    )

    def source() -> Iterator[bytes]:
        yield from chunks(3 * PART + 5)
        time.sleep(0.2)  # the three parts are on their way
        raise error

    with pytest.raises(type(error)):
        s3.write("big", source())
    assert in_flight.seen == 3 and in_flight.most == 3  # three parts were in flight at once
    assert in_flight.events == ["request", "request", "request", "abort"]  # aborted once they had ended
    assert pending_uploads(s3, s3_endpoint) == []
    assert not s3.exists("big")


# -- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, "4", 2.0, True, None])
def test_a_bad_max_concurrency_is_refused_by_name(s3_endpoint: S3Endpoint, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        s3_endpoint.storage("b", max_concurrency=value)


def test_max_concurrency_defaults_to_8_and_travels(s3_endpoint: S3Endpoint) -> None:
    assert s3_endpoint.storage("b").max_concurrency == 8
    copy = pickle.loads(pickle.dumps(s3_endpoint.storage("b", max_concurrency=3)))
    assert copy.max_concurrency == 3


def test_from_url_and_from_config_pass_max_concurrency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    given = from_url("s3://b", endpoint="http://127.0.0.1:9000", max_concurrency=3)
    in_query = from_url("s3://b/p?endpoint=http://127.0.0.1:9000&max_concurrency=2")
    assert isinstance(in_query, PrefixedStorage)
    config = from_config(
        {"type": "s3", "endpoint": "http://127.0.0.1:9000", "bucket": "b", "max_concurrency": 5}
    )
    by_url = from_config({"url": "s3://b", "endpoint": "http://127.0.0.1:9000", "max_concurrency": 1})
    stores = [given, in_query.storage, config, by_url]
    assert all(isinstance(store, S3Storage) for store in stores)
    assert [store.max_concurrency for store in stores] == [3, 2, 5, 1]  # type: ignore[attr-defined]
    bad: list[tuple[str, dict[str, object]]] = [
        ("s3://b?max_concurrency=0", {}),
        ("s3://b?max_concurrency=many", {}),
        ("s3://b", {"max_concurrency": "3"}),
        ("s3://b", {"max_concurrency": True}),
    ]
    for url, options in bad:
        with pytest.raises(ConfigError, match="option 'max_concurrency'"):
            from_url(url, endpoint="http://127.0.0.1:9000", **options)
    with pytest.raises(ConfigError, match="field 'max_concurrency'"):
        from_config({"type": "s3", "endpoint": "http://h:9000", "bucket": "b", "max_concurrency": 0})
