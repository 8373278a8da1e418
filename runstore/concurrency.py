"""Storage requests of independent items, issued concurrently by a bounded pool."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

WORKERS = 16
"""How many items at once, by default: what one client keeps in flight against a store."""


def each(action: Callable[[T], R], items: Sequence[T], workers: int = WORKERS) -> list[R]:
    """``action(item)`` for every item, at most ``workers`` at once; the results in order.

    Every item is tried even when others fail; then the first failure (in item order)
    is raised.
    """
    if len(items) <= 1 or workers <= 1:
        return _serially(action, items)
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="runstore") as pool:
        futures = [pool.submit(action, item) for item in items]
    failures = [exc for future in futures if (exc := future.exception()) is not None]
    if failures:
        raise failures[0]
    return [future.result() for future in futures]


def _serially(action: Callable[[T], R], items: Sequence[T]) -> list[R]:
    results: list[R] = []
    failure: BaseException | None = None
    for item in items:
        try:
            results.append(action(item))
        except Exception as exc:  # tried all, then the first raised: as the pool does
            failure = failure or exc
    if failure is not None:
        raise failure
    return results
