"""Versions of what each executor is assigned, changed by threads and awaited by coroutines.

The runservice's units (threads) :meth:`Changes.bump` an executor's version whenever its
assignment changes; its long poll (a coroutine of the server) awaits :meth:`Changes.wait`,
which holds no thread. A version is ``<epoch>.<count>``, the epoch new for each
runservice, so a version seen from an earlier runservice never matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading


class Changes:
    """A version per key (an executor id); thread-safe, awaitable from any event loop."""

    def __init__(self) -> None:
        self._epoch = secrets.token_hex(4)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

    def version(self, key: str) -> str:
        """The current version of ``key``."""
        with self._lock:
            return self._version(key)

    def _version(self, key: str) -> str:
        return f"{self._epoch}.{self._counts.get(key, 0)}"

    def bump(self, key: str) -> None:
        """``key`` changed: a new version, and its waiters wake."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            waiters = self._waiters.pop(key, [])
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, future)

    def bump_all(self) -> None:
        """Wake every waiter with a new version (say, the runservice stops)."""
        with self._lock:
            keys = list(self._waiters)
        for key in keys:
            self.bump(key)

    async def wait(self, key: str, seen: str, timeout: float) -> None:
        """Return once the version of ``key`` is not ``seen``, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._version(key) != seen:
                return
            self._waiters.setdefault(key, []).append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(key, [])
                if waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._waiters[key]

    def waiting(self, key: str) -> bool:
        """Whether a coroutine waits on ``key`` now."""
        with self._lock:
            return bool(self._waiters.get(key))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
