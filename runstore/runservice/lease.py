"""One runservice at a time owns a store: a lease object renewed with conditional writes.

The holder counts its lease valid until ``ttl`` after it *sent* the write that last took
or renewed it (on its own monotonic clock), less a margin of ``ttl / 3``; another
instance takes the lease over only once the ``expires`` time written in it (the holder's
wall clock at that write, plus ``ttl``) has passed on its own wall clock. So, with clocks
that agree within the margin less the time a write takes to land, the holder has stopped
writing (:meth:`Lease.check` refuses) before anyone else may start.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime, timedelta

from objstore import AlreadyExistsError, NotExistError, OutcomeUnknownError, PreconditionFailedError, Storage
from runstore.clock import now
from runstore.contract.errors import LeaseHeldError, LeaseLostError

LEASE_KEY = "runservice/lease"


class Lease:
    """The lease of ``owner`` on a store, valid for ``ttl`` after each renewal."""

    def __init__(self, storage: Storage, owner: str, ttl: timedelta = timedelta(seconds=15)) -> None:
        self.storage = storage
        self.owner = owner
        self.ttl = ttl
        self._etag: str | None = None
        self._valid_until = 0.0  # monotonic: when this holder stops counting on the lease

    @property
    def margin(self) -> float:
        """Seconds before the lease ends at which its holder stops writing."""
        return self.ttl.total_seconds() / 3

    def holds(self) -> bool:
        """Whether this owner holds the lease with at least :attr:`margin` seconds left."""
        return self._etag is not None and time.monotonic() < self._valid_until - self.margin

    def check(self) -> None:
        """``LeaseLostError`` unless :meth:`holds`: the fence of every write of the runservice."""
        if not self.holds():
            raise LeaseLostError(
                f"this runservice ({self.owner}) does not hold the store's lease: it changes nothing"
            )

    def _took(self, etag: str, sent: float) -> None:
        self._etag = etag
        self._valid_until = sent + self.ttl.total_seconds()

    def _body(self) -> bytes:
        expires = now() + self.ttl
        return json.dumps({"owner": self.owner, "expires": expires.isoformat()}).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or this owner's; whether this owner holds it now.

        A write whose outcome was lost counts as not taken; if it was applied, the lease
        names this owner and the next call takes it again.
        """
        sent = time.monotonic()
        try:
            self._took(self.storage.write(LEASE_KEY, self._body(), if_none_match=True), sent)
            return True
        except (AlreadyExistsError, OutcomeUnknownError):
            pass
        try:
            info = self.storage.stat(LEASE_KEY)
            current = json.loads(self.storage.read_bytes(LEASE_KEY))
        except NotExistError:
            return self.try_acquire()
        if current["owner"] != self.owner and datetime.fromisoformat(current["expires"]) > now():
            return False
        sent = time.monotonic()
        try:
            self._took(self.storage.write(LEASE_KEY, self._body(), if_match=info.etag), sent)
        except (PreconditionFailedError, NotExistError, OutcomeUnknownError):
            return False
        return True

    def holder(self) -> str:
        """Who holds the lease (possibly expired), or "" if nobody."""
        try:
            return str(json.loads(self.storage.read_bytes(LEASE_KEY))["owner"])
        except NotExistError:
            return ""

    def acquire(self, *, wait: bool, timeout: float = 60.0) -> None:
        """Take the lease; if another instance holds it, wait for it or raise ``LeaseHeldError``."""
        deadline = time.monotonic() + timeout
        while not self.try_acquire():
            if not wait or time.monotonic() > deadline:
                raise LeaseHeldError(
                    f"another runservice ({self.holder()}) owns this store; stop it or wait for its lease"
                    f" to expire (at most {self.ttl.total_seconds():.0f} s after it stops)"
                )
            time.sleep(min(1.0, self.ttl.total_seconds() / 5))

    def renew(self) -> None:
        """Extend the lease; ``LeaseHeldError`` if it was lost meanwhile."""
        if self._etag is None:
            raise LeaseHeldError("the lease was never acquired")
        sent = time.monotonic()
        try:
            self._took(self.storage.write(LEASE_KEY, self._body(), if_match=self._etag), sent)
        except OutcomeUnknownError as exc:
            self._etag = None
            if not self.try_acquire():  # the lease still names this owner, whatever happened
                raise LeaseHeldError("the lease was lost to another runservice") from exc
        except (PreconditionFailedError, NotExistError) as exc:
            self._etag = None
            raise LeaseHeldError("the lease was lost to another runservice") from exc

    def release(self) -> None:
        """Give the lease up at once, so that another instance takes it without waiting."""
        if self._etag is not None:
            with contextlib.suppress(PreconditionFailedError, NotExistError, OutcomeUnknownError):
                self.storage.write(
                    LEASE_KEY, b'{"owner": "", "expires": "1970-01-01T00:00:00+00:00"}', if_match=self._etag
                )
            self._etag = None
