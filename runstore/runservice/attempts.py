"""A loop over items that one failing item never stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from runstore.contract.errors import CorruptDocumentError, NotExistError, ServiceError
from runstore.runservice.state import Documents

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_TROUBLES = 1000
"""How many failing items are remembered, to log each failure once (not every pass)."""


class Attempts:
    """Runs the loops' actions one item at a time; a failure is logged, once while it repeats.

    Shared by every loop of a runservice; thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._troubles: dict[str, str] = {}  # a failing item -> its error, as last logged

    def each(self, documents: Documents[T]) -> Iterator[T]:
        """Every document of a kind that can be read; one that cannot is logged and skipped."""
        for doc_id in documents.ids():
            try:
                yield documents.get(doc_id)
            except NotExistError:
                continue  # deleted meanwhile
            except CorruptDocumentError as exc:  # written by other means than this service
                self.trouble(f"reading {documents.kind} document {doc_id}", exc)

    def attempt(self, item: str, action: Callable[[], object]) -> None:
        """Do ``action``; if it fails, log it (once while it fails the same way) and return."""
        try:
            action()
        except Exception as exc:  # one item's failure never stops a loop over the others
            self.trouble(item, exc)
        else:
            with self._lock:
                self._troubles.pop(item, None)

    def trouble(self, item: str, exc: Exception) -> None:
        """Log that ``item`` failed with ``exc``: a warning for a service error, an error with
        its traceback for anything else; at debug level while it repeats."""
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            repeated = self._troubles.get(item) == message
            if not repeated:
                if len(self._troubles) >= MAX_TROUBLES:
                    self._troubles.clear()
                self._troubles[item] = message
        if repeated:
            log.debug("%s still fails: %s", item, message)
        elif isinstance(exc, ServiceError):
            log.warning("%s failed: %s", item, message)
        else:
            log.error("%s failed: %s", item, message, exc_info=exc)
