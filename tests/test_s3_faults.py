"""The S3 backend under injected faults: 503s, resets, lost answers, cut and garbled bodies, stalls.

Every test runs the real client against the S3 test server through the fault-injecting
proxy (tests/faultproxy.py) on 127.0.0.1. Each call must return the right data, raise a
typed objstore error, or say that its outcome is unknown; never return wrong or short data.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

import attrs
import pytest

from objstore import (
    AlreadyExistsError,
    CleanupResult,
    IntegrityError,
    NotExistError,
    ObjectChangedError,
    ObjstoreError,
    PreconditionFailedError,
    RemoteError,
    S3Storage,
)
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, Rule
from tests.storage_worker import storage_spec

PART = 5 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Factory = Callable[..., S3Storage]


def direct(s3: S3Storage, endpoint: S3Endpoint) -> S3Storage:
    """The same bucket, reached without the proxy."""
    return endpoint.storage(s3.bucket)


def pending_uploads(s3: S3Storage, endpoint: S3Endpoint) -> list[str]:
    client = endpoint.client()
    response = client._execute("GET", s3.bucket, query_params={"uploads": ""})
    return [part.split("</UploadId>")[0] for part in response.data.decode().split("<UploadId>")[1:]]


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield bytes([start // size % 251]) * min(size, total - start)


# -- conditional writes whose answer is lost ------------------------------------------


LOST_ANSWERS = [Fault.RESET_AFTER, Fault.STATUS_500_AFTER, Fault.STALL_HEADERS]


@pytest.mark.parametrize("fault", LOST_ANSWERS)
def test_a_create_whose_answer_was_lost_is_proven_by_its_write_id(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault
) -> None:
    fault_proxy.stall_limit = 3
    s3 = proxied_storage(retries=2, backoff=0.01, timeout=1)
    fault_proxy.plan(Rule(fault, method="PUT", has_header="if-none-match", times=1))
    etag = s3.write("lock", b"mine", if_none_match=True)
    assert fault_proxy.counts() == {fault.name: 1}
    assert s3.stat("lock").etag == etag and s3.read_bytes("lock") == b"mine"
    with pytest.raises(AlreadyExistsError):
        s3.write("lock", b"mine", if_none_match=True)  # no lost answer: a plain refusal


@pytest.mark.parametrize("fault", LOST_ANSWERS)
def test_a_swap_whose_answer_was_lost_is_proven_by_its_write_id(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault
) -> None:
    fault_proxy.stall_limit = 3
    s3 = proxied_storage(retries=2, backoff=0.01, timeout=1)
    old = s3.write("counter", b"5")
    fault_proxy.plan(Rule(fault, method="PUT", has_header="if-match", times=1))
    new = s3.write("counter", b"6", if_match=old)
    assert fault_proxy.counts() == {fault.name: 1}
    assert s3.stat("counter").etag == new and s3.read_bytes("counter") == b"6"
    with pytest.raises(PreconditionFailedError):
        s3.write("counter", b"7", if_match=old)


def test_an_unapplied_try_is_retried_without_a_read_back(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01)
    fault_proxy.plan(Rule(Fault.STATUS_503, method="PUT", times=2))
    etag = s3.write("lock", b"mine", if_none_match=True)
    assert fault_proxy.requests == 3  # two 503s, then the PUT: no read-back in between
    assert s3.stat("lock").etag == etag


def test_an_unapplied_create_beaten_by_the_same_bytes_is_not_a_success(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    """The first try is lost before the server; another writer then stores the same bytes."""
    s3 = proxied_storage(retries=2, backoff=0.01)
    other = direct(s3, s3_endpoint)
    fault_proxy.plan(Rule(Fault.RESET, method="PUT", times=1, then=lambda: other.write("lock", b"same")))
    with pytest.raises(ObjstoreError) as caught:
        s3.write("lock", b"same", if_none_match=True)
    # A reset request may have been applied: the client cannot tell, so it says so.
    assert type(caught.value).__name__ == "OutcomeUnknownError"
    assert "'lock'" in str(caught.value)


def test_an_unapplied_swap_beaten_by_the_same_bytes_is_not_a_success(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    """Two writers both move a counter from 5 to 6: only one of them may succeed."""
    s3 = proxied_storage(retries=2, backoff=0.01)
    other = direct(s3, s3_endpoint)
    five = s3.write("counter", b"5")
    fault_proxy.plan(
        Rule(Fault.RESET, method="PUT", times=1, then=lambda: other.write("counter", b"6", if_match=five))
    )
    with pytest.raises(ObjstoreError) as caught:
        s3.write("counter", b"6", if_match=five)
    assert type(caught.value).__name__ == "OutcomeUnknownError"
    assert s3.read_bytes("counter") == b"6"


def test_an_applied_swap_overtaken_before_its_read_back_is_unknown_not_refused(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    """Applied, answer lost, then changed by another writer: a refusal would make the caller retry it."""
    s3 = proxied_storage(retries=2, backoff=0.01)
    other = direct(s3, s3_endpoint)
    five = s3.write("counter", b"5")

    def overtake() -> None:
        other.write("counter", b"7", if_match=other.stat("counter").etag)

    fault_proxy.plan(Rule(Fault.RESET_AFTER, method="PUT", has_header="if-match", times=1, then=overtake))
    with pytest.raises(ObjstoreError) as caught:
        s3.write("counter", b"6", if_match=five)
    assert type(caught.value).__name__ == "OutcomeUnknownError"
    assert isinstance(caught.value, RemoteError)
    assert s3.read_bytes("counter") == b"7"


@pytest.mark.parametrize(("fault", "unknown"), [(Fault.RESET, True), (Fault.STATUS_503, False)])
def test_the_last_try_is_unknown_only_if_it_may_still_land(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault, unknown: bool
) -> None:
    """A reset request may yet reach the server; a 503 was refused before it was applied."""
    s3 = proxied_storage(retries=0)
    fault_proxy.plan(Rule(fault, method="PUT"))
    with pytest.raises(RemoteError) as caught:
        s3.write("lock", b"mine", if_none_match=True)
    assert (type(caught.value).__name__ == "OutcomeUnknownError") == unknown
    assert caught.value.transient != unknown  # an unknown outcome is read back, not retried blindly


def test_a_read_back_that_fails_leaves_the_outcome_unknown(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    s3 = proxied_storage(retries=1, backoff=0.01)
    fault_proxy.plan(Rule(Fault.RESET_AFTER, method="PUT", times=1), Rule(Fault.STATUS_503, method="HEAD"))
    with pytest.raises(ObjstoreError) as caught:
        s3.write("lock", b"mine", if_none_match=True)
    assert type(caught.value).__name__ == "OutcomeUnknownError"
    assert isinstance(caught.value.__cause__, RemoteError)


def test_a_multipart_create_whose_answer_was_lost_is_proven(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01, part_size=PART)
    fault_proxy.plan(Rule(Fault.RESET_AFTER, method="POST", query="uploadId", times=1))
    etag = s3.write("big", chunks(PART + 10), if_none_match=True)
    assert fault_proxy.counts() == {"RESET_AFTER": 1}
    assert s3.stat("big").etag == etag and etag.endswith("-2")
    assert s3.read_bytes("big") == b"".join(chunks(PART + 10))
    assert pending_uploads(s3, s3_endpoint) == []
    with pytest.raises(AlreadyExistsError):  # refused before any part goes up
        s3.write("big", chunks(PART + 10), if_none_match=True)
    assert pending_uploads(s3, s3_endpoint) == []


# -- concurrent counters through lost answers ---------------------------------------------

COUNTER_FAULTS = (
    Rule(Fault.RESET_AFTER, method="PUT", probability=0.15),
    Rule(Fault.STATUS_500_AFTER, method="PUT", probability=0.05),
    Rule(Fault.RESET, probability=0.03),
    Rule(Fault.STATUS_503, probability=0.03),
    Rule(Fault.CUT, method="GET", probability=0.05),
    Rule(Fault.GARBLE, method="GET", probability=0.05),
)
WRITERS = 3
INCREMENTS = 25


def run_counter(
    s3: S3Storage, fault_proxy: FaultProxy, mode: str, initial: bytes
) -> tuple[int, dict[str, int]]:
    s3.write("counter", initial)
    fault_proxy.plan(*COUNTER_FAULTS, seed=7)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.counter_worker",
                storage_spec(s3),
                "counter",
                f"w{n}",
                str(INCREMENTS),
                mode,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    tally: dict[str, int] = {}
    for worker in workers:
        out, _ = worker.communicate(timeout=180)
        assert worker.returncode == 0
        for name, count in json.loads(out).items():
            tally[name] = tally.get(name, 0) + count
    fault_proxy.clear()
    counter = s3.read_bytes("counter")
    final = int(counter) if mode == "plain" else json.loads(counter)["count"]
    print(f"\n{mode} counter: final {final}, reported {tally}, faults {fault_proxy.counts()}")
    return final, tally


@pytest.mark.slow
def test_a_plain_counter_never_counts_a_lost_update_as_a_success(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    final, tally = run_counter(proxied_storage(), fault_proxy, "plain", b"0")
    assert tally["successes"] + tally["unknown"] == WRITERS * INCREMENTS
    assert tally["successes"] <= final <= tally["successes"] + tally["unknown"]
    assert fault_proxy.counts().get("RESET_AFTER", 0) > 0


@pytest.mark.slow
def test_a_counter_that_reads_back_its_unknown_outcomes_ends_exact(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    final, tally = run_counter(proxied_storage(), fault_proxy, "exact", b'{"count": 0, "last": {}}')
    assert tally["successes"] + tally["resolved"] == WRITERS * INCREMENTS
    assert final == WRITERS * INCREMENTS


# -- reads and answers that cannot lie ------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.CUT_CONSISTENT, Fault.GARBLE])
@pytest.mark.parametrize("size", [1, 1000, PART + 1])
def test_a_bad_body_is_never_data(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault, size: int
) -> None:
    s3 = proxied_storage(retries=0, part_size=PART)
    data = b"".join(chunks(size, 997))
    s3.write("k", iter([data]))  # several parts when over PART: a checksum over the parts
    fault_proxy.plan(Rule(fault, method="GET"))
    with pytest.raises(IntegrityError if fault is not Fault.CUT else RemoteError) as caught:
        s3.read_bytes("k")
    assert "'k'" in str(caught.value)
    with pytest.raises(RemoteError), s3.read("k") as stream:  # (a length that cannot be fails at once)
        while stream.read(4096):
            pass
    fault_proxy.clear()
    assert s3.read_bytes("k") == data


def write_multipart_with_crc32(endpoint: S3Endpoint, bucket: str, key: str, parts: list[bytes]) -> None:
    """Another client's multipart object that the server keeps a full-object CRC32 of."""
    client = endpoint.boto()
    upload = client.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    done = []
    for number, part in enumerate(parts, start=1):
        answer = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
            ChecksumAlgorithm="CRC32",
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]})
    client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
        ChecksumType="FULL_OBJECT",
    )


@pytest.mark.parametrize("fault", [Fault.CUT_CONSISTENT, Fault.GARBLE])
def test_another_clients_multipart_object_is_checked_by_its_full_object_checksum(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, fault: Fault
) -> None:
    s3 = proxied_storage(retries=0)
    parts = [b"".join(chunks(PART, 4093)), b"tail" * 1000]
    write_multipart_with_crc32(s3_endpoint, s3.bucket, "theirs", parts)
    assert "-" in s3.stat("theirs").etag  # no MD5 of the whole: only the CRC32 can tell
    assert s3.read_bytes("theirs") == b"".join(parts)
    fault_proxy.plan(Rule(fault, method="GET"))
    # read_bytes asks for a range: a cut that rewrote the length fails its Content-Range first
    with pytest.raises(IntegrityError, match="digest" if fault is Fault.GARBLE else "digest|ranged read"):
        s3.read_bytes("theirs")


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.CUT_CONSISTENT, Fault.GARBLE, Fault.RESET])
def test_a_read_is_made_whole_within_the_retries(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault
) -> None:
    s3 = proxied_storage(retries=3, backoff=0.01)
    data = b"".join(chunks(3 << 20, 4093))
    s3.write("k", data)
    fault_proxy.plan(Rule(fault, method="GET", times=2))
    assert s3.read_bytes("k") == data  # read again, or resumed
    fault_proxy.plan(Rule(fault, method="GET", times=2))
    with s3.read("k") as stream:
        if fault in (Fault.CUT, Fault.RESET):  # resumed where it broke
            assert b"".join(iter(lambda: stream.read(100_000), b"")) == data
        else:  # the bytes handed out cannot be taken back: the end of the stream is an error
            with pytest.raises(IntegrityError):
                while stream.read(100_000):
                    pass


def test_a_broken_read_resumes_from_where_it_stopped(
    proxied_storage: Factory, fault_proxy: FaultProxy
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01)
    data = b"".join(chunks(4 << 20, 4093))
    s3.write("k", data)
    fault_proxy.plan(Rule(Fault.CUT, method="GET", times=1))
    before = fault_proxy.requests
    with s3.read("k") as stream:
        assert stream.read() == data
    assert fault_proxy.requests - before == 2  # the cut GET, then one ranged GET for the rest


def test_a_resumed_read_of_a_replaced_object_fails(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01)
    s3.write("k", b"old" * 100_000)
    fault_proxy.plan(Rule(Fault.CUT, method="GET", times=1))
    with s3.read("k") as stream:
        direct(s3, s3_endpoint).write("k", b"new" * 100_000)
        with pytest.raises(ObjectChangedError, match="'k'"):
            stream.read()
    assert s3.read_bytes("k") == b"new" * 100_000


XML_CALLS: dict[str, tuple[Callable[[S3Storage], object], list[Rule]]] = {
    "list": (lambda s3: [entry.key for entry in s3.list()], [Rule(Fault.GARBLE, method="GET")]),
    "list_folded": (lambda s3: list(s3.list_keys("", recursive=False)), [Rule(Fault.GARBLE, method="GET")]),
    "delete_many": (lambda s3: s3.delete_many(["gone", "a/gone"]), [Rule(Fault.GARBLE, query="delete")]),
    "copy": (lambda s3: s3.copy("a/1", "b") and s3.read_bytes("b"), [Rule(Fault.GARBLE, method="PUT")]),
    "multipart": (
        lambda s3: s3.write("big", chunks(PART + 1)) and s3.read_bytes("big") == b"".join(chunks(PART + 1)),
        [
            Rule(Fault.GARBLE, method="POST", query="uploads"),
            Rule(Fault.GARBLE, method="POST", query="uploadId"),
        ],
    ),
}


@pytest.mark.parametrize("fault", [Fault.CUT, Fault.CUT_CONSISTENT, Fault.GARBLE])
@pytest.mark.parametrize("call", sorted(XML_CALLS))
def test_a_cut_or_garbled_xml_answer_is_a_typed_error_then_retried(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault, call: str
) -> None:
    s3 = proxied_storage(retries=0, part_size=PART)
    s3.write("a/1", b"alpha")
    run, rules = XML_CALLS[call]
    expected = run(s3)
    for rule in rules:
        fault_proxy.plan(attrs.evolve(rule, fault=fault))
        with pytest.raises(RemoteError) as caught:  # an IntegrityError, or a broken connection for a cut
            run(s3)
        assert caught.value.transient
    fault_proxy.plan(*(attrs.evolve(rule, fault=fault, times=1) for rule in rules))
    s3.retries = 2
    assert run(s3) == expected
    assert fault_proxy.counts() == {fault.name: 2 * len(rules)}


# -- timeouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.STALL, Fault.STALL_HEADERS])
def test_the_timeout_bounds_a_whole_request(
    proxied_storage: Factory, fault_proxy: FaultProxy, fault: Fault
) -> None:
    """A server that trickles a byte every 0.5 s never trips a socket timeout of 2 s."""
    fault_proxy.trickle_interval = 0.5
    fault_proxy.stall_limit = 12
    s3 = proxied_storage(retries=0, timeout=2)
    s3.write("k", b"x" * 100)
    fault_proxy.plan(Rule(fault, method="GET"))
    started = time.monotonic()
    with pytest.raises(RemoteError, match="timeout") as caught:
        s3.read_bytes("k")
    elapsed = time.monotonic() - started
    print(f"\n{fault.name}: failed after {elapsed:.2f} s with timeout=2")
    assert caught.value.transient
    assert elapsed < 3.5


def test_a_stalled_read_resumes(proxied_storage: Factory, fault_proxy: FaultProxy) -> None:
    fault_proxy.trickle_interval = 0.5
    s3 = proxied_storage(retries=2, timeout=1, backoff=0.01)
    data = b"".join(chunks(1 << 20, 4093))
    s3.write("k", data)
    fault_proxy.plan(Rule(Fault.STALL, method="GET", times=1))
    assert s3.read_bytes("k") == data


# -- multipart uploads never left behind --------------------------------------------------


class SourceFailed(Exception):
    pass


def failing_source(after: int, error: BaseException) -> Iterator[bytes]:
    yield from chunks(after)
    raise error


@pytest.mark.parametrize("error", [SourceFailed("disk gone"), KeyboardInterrupt()])
def test_an_interrupted_multipart_write_is_aborted(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint, error: BaseException
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01, part_size=PART)
    fault_proxy.plan(Rule(Fault.STATUS_503, method="DELETE", times=1))  # the abort is retried too
    with pytest.raises(type(error)):
        s3.write("big", failing_source(2 * PART + 5, error))
    assert pending_uploads(s3, s3_endpoint) == []
    assert not s3.exists("big")


def test_a_failed_multipart_write_is_aborted(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(retries=1, backoff=0.01, part_size=PART)
    fault_proxy.plan(Rule(Fault.STATUS_503, method="PUT", query="partNumber", skip=1))
    with pytest.raises(RemoteError):
        s3.write("big", chunks(3 * PART))
    assert pending_uploads(s3, s3_endpoint) == []


KILLED_WRITER = """
import sys, time
from tests.storage_worker import open_storage

def data():
    for number in range(64):
        yield bytes([number]) * (1 << 20)
        if number == 40:  # two parts of 16 MiB are up
            print("WRITING", flush=True)
            time.sleep(60)

open_storage(sys.argv[1]).write("big", data(), if_none_match=True)
"""


def test_a_writer_killed_mid_upload_leaves_what_cleanup_removes(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage()
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, storage_spec(s3)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "WRITING\n"
    finally:
        writer.kill()  # SIGKILL: no abort
        writer.wait(timeout=30)
    assert not s3.exists("big")
    assert len(pending_uploads(s3, s3_endpoint)) == 1
    assert s3.cleanup(older_than=0) == CleanupResult(uploads=1)
    assert pending_uploads(s3, s3_endpoint) == []
    s3.write("big", b"whole", if_none_match=True)  # nothing stands in the way


def test_cleanup_aborts_what_a_lost_create_left(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    s3 = proxied_storage(retries=2, backoff=0.01, part_size=PART)
    fault_proxy.plan(Rule(Fault.RESET_AFTER, method="POST", query="uploads", times=1))
    s3.write("big", chunks(PART + 1))
    assert len(pending_uploads(s3, s3_endpoint)) == 1  # created, but its id never reached the writer
    if os.environ.get("OBJSTORE_TEST_S3_ENDPOINT"):  # moto dates every upload in 2010
        assert s3.cleanup(older_than=3600).uploads == 0
    assert s3.cleanup(older_than=0) == CleanupResult(uploads=1)
    assert pending_uploads(s3, s3_endpoint) == []
    assert s3.read_bytes("big") == b"".join(chunks(PART + 1))


# -- a long run of random faults ---------------------------------------------------------------

RANDOM_FAULTS = tuple(
    Rule(fault, probability=0.04)
    for fault in (
        Fault.STATUS_503,
        Fault.RESET,
        Fault.RESET_AFTER,
        Fault.STATUS_500_AFTER,
        Fault.CUT,
        Fault.CUT_CONSISTENT,
        Fault.GARBLE,
        Fault.STALL,
    )
)


@pytest.mark.slow
def test_every_call_under_random_faults_is_right_or_typed(
    proxied_storage: Factory, fault_proxy: FaultProxy, s3_endpoint: S3Endpoint
) -> None:
    """Calls against a model of what each key may hold: a failed write may or may not have landed."""
    fault_proxy.trickle_interval = 0.2
    fault_proxy.stall_limit = 2
    s3 = proxied_storage(retries=2, backoff=0.005, timeout=0.5, part_size=PART)
    rng = random.Random(3)
    keys = [f"k{n}" for n in range(6)]
    possible: dict[str, set[bytes | None]] = {key: {None} for key in keys}
    outcomes: dict[str, int] = {}
    fault_proxy.plan(*RANDOM_FAULTS, seed=11)
    for call in range(400):
        key = rng.choice(keys)
        action = rng.choice(["write", "write", "create", "swap", "read", "stream", "list", "delete", "big"])
        value = f"{key}:{call}:".encode() * rng.randint(1, 2000)
        try:
            if action in ("write", "big"):
                data: object = chunks(PART + 7) if action == "big" else value
                value = b"".join(chunks(PART + 7)) if action == "big" else value
                possible[key].add(value)
                s3.write(key, data)  # type: ignore[arg-type]
                possible[key] = {value}
            elif action == "create":
                possible[key].add(value)
                s3.write(key, value, if_none_match=True)
                assert None in possible[key]
                possible[key] = {value}
            elif action == "swap":
                etag = s3.stat(key).etag  # (a NotExistError here is checked below)
                possible[key].add(value)
                s3.write(key, value, if_match=etag)
                possible[key] = {value}
            elif action in ("read", "stream"):
                if action == "read":
                    got = s3.read_bytes(key)
                else:
                    with s3.read(key) as stream:
                        got = b"".join(iter(lambda: stream.read(65536), b""))
                assert got in possible[key], f"{action} of {key} returned data no write stored"
                possible[key] = {got}
            elif action == "list":
                listed = {entry.key for entry in s3.list()}
                for name in keys:
                    assert (name in listed and possible[name] != {None}) or (
                        name not in listed and None in possible[name]
                    )
            else:
                possible[key].add(None)
                s3.delete(key)
                possible[key] = {None}
            outcome = "ok"
        except NotExistError:
            assert None in possible[key]
            outcome = "NotExistError"
        except (AlreadyExistsError, PreconditionFailedError) as exc:
            outcome = type(exc).__name__
        except ObjstoreError as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    fault_proxy.clear()
    leftovers = pending_uploads(s3, s3_endpoint)
    lost_creates = sum(  # uploads made on the server whose answer never reached the writer
        1
        for injection in fault_proxy.injected
        if injection.method == "POST"
        and "uploads" in parse_qs(injection.query, keep_blank_values=True)
        and injection.fault not in (Fault.RESET, Fault.STATUS_503)
    )
    print(
        f"\n400 calls: {outcomes}; faults: {fault_proxy.counts()}; uploads left {len(leftovers)},"
        f" creates whose answer was lost {lost_creates}"
    )
    assert len(leftovers) <= lost_creates
    s3.cleanup(older_than=0)
    assert pending_uploads(s3, s3_endpoint) == []
