"""A hypothesis state machine drives the S3 backend through the fault proxy.

Each step draws an operation and the fault its first matching request meets (or none).
A model keeps what each key may hold: a write that failed may or may not have landed, so
its value joins the key's possibilities. Every call must give data the model allows, or
a typed objstore error; a failing run shrinks to its shortest sequence of faults.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from objstore import AlreadyExistsError, NotExistError, ObjstoreError, PreconditionFailedError, S3Storage
from tests.faultproxy import Fault, FaultProxy, Rule

KEYS = st.sampled_from(["a", "b", "c/d"])
FAULTS = st.sampled_from([None, *Fault])
METHODS = st.sampled_from([None, None, "GET", "PUT", "HEAD"])  # None: the call's first request
VALUES = st.binary(min_size=1, max_size=64) | st.builds(lambda n: bytes([n]) * 200_000, st.integers(0, 255))
Absent = None


class FaultyS3(RuleBasedStateMachine):
    """The S3 backend behind a proxy that breaks the request a step chooses."""

    s3: S3Storage
    proxy: FaultProxy

    def __init__(self) -> None:
        super().__init__()
        self.possible: dict[str, set[bytes | None]] = {}
        self.outcomes: dict[str, int] = {}

    def allowed(self, key: str) -> set[bytes | None]:
        return self.possible.setdefault(key, {Absent})

    def run(self, fault: Fault | None, method: str | None, call: Callable[[], object]) -> str:
        """Run ``call`` with ``fault`` planned for its first request of ``method``; its outcome.

        Any exception that is not objstore's fails the test."""
        self.proxy.plan(*([Rule(fault, method=method, times=1)] if fault else []))
        try:
            call()
            outcome = "ok"
        except (AlreadyExistsError, PreconditionFailedError, NotExistError) as exc:
            outcome = type(exc).__name__
        except ObjstoreError as exc:
            outcome = f"failed: {type(exc).__name__}"
        finally:
            self.proxy.clear()
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome

    @rule(
        key=KEYS,
        value=VALUES,
        fault=FAULTS,
        method=METHODS,
        condition=st.sampled_from(["", "create", "swap"]),
    )
    def write(self, key: str, value: bytes, fault: Fault | None, method: str | None, condition: str) -> None:
        before = set(self.allowed(key))

        def call() -> None:
            if condition == "swap":
                etag = self.s3.stat(key).etag
                self.allowed(key).add(value)
                self.s3.write(key, value, if_match=etag)
            else:
                self.allowed(key).add(value)
                self.s3.write(key, value, if_none_match=condition == "create")

        outcome = self.run(fault, method, call)
        if outcome == "ok":
            assert condition != "create" or Absent in before, f"created {key!r} over {before}"
            self.possible[key] = {value}
        elif outcome in ("AlreadyExistsError", "PreconditionFailedError", "NotExistError"):
            self.possible[key] = before  # refused: nothing changed

    @rule(key=KEYS, fault=FAULTS, method=METHODS, stream=st.booleans())
    def read(self, key: str, fault: Fault | None, method: str | None, stream: bool) -> None:
        got: list[bytes] = []

        def call() -> None:
            if stream:
                with self.s3.read(key) as body:
                    got.append(b"".join(iter(lambda: body.read(65536), b"")))
            else:
                got.append(self.s3.read_bytes(key))

        outcome = self.run(fault, method, call)
        if outcome == "ok":
            assert got[0] in self.allowed(key), f"{key!r} read {len(got[0])} bytes that no write stored"
            self.possible[key] = {got[0]}
        elif outcome == "NotExistError":
            assert Absent in self.allowed(key)
            self.possible[key] = {Absent}

    @rule(key=KEYS, fault=FAULTS, method=METHODS)
    def delete(self, key: str, fault: Fault | None, method: str | None) -> None:
        self.allowed(key).add(Absent)
        if self.run(fault, method, lambda: self.s3.delete(key)) == "ok":
            self.possible[key] = {Absent}

    @rule(fault=FAULTS, method=METHODS)
    def listing(self, fault: Fault | None, method: str | None) -> None:
        listed: list[str] = []
        if self.run(fault, method, lambda: listed.extend(entry.key for entry in self.s3.list())) != "ok":
            return
        assert listed == sorted(listed) and set(listed) <= set(self.possible)
        for key, values in self.possible.items():
            if key in listed:
                assert values != {Absent}, f"{key!r} listed, but no write of it may have landed"
                values.discard(Absent)
            else:
                assert Absent in values, f"{key!r} not listed, but it must exist"
                self.possible[key] = {Absent}


def test_the_s3_backend_under_drawn_faults(
    proxied_storage: Callable[..., S3Storage], fault_proxy: FaultProxy
) -> None:
    fault_proxy.trickle_interval = 0.1
    fault_proxy.stall_limit = 1
    outcomes: dict[str, int] = {}

    class Machine(FaultyS3):
        def __init__(self) -> None:
            super().__init__()
            self.s3 = proxied_storage(retries=2, backoff=0.001, timeout=0.3, part_size=5 << 20)
            self.proxy = fault_proxy
            self.outcomes = outcomes

    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        Machine, settings=settings(max_examples=20, stateful_step_count=30, deadline=None, database=None)
    )
    print(f"\noutcomes: {outcomes}; faults: {fault_proxy.counts()}")
    assert outcomes.get("ok", 0) > 0
