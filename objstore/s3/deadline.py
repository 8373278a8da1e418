"""Deadlines on whole HTTP requests, not on each socket read.

A socket timeout bounds one ``recv``: a server that trickles a byte a second never trips
it. Here a request runs under an :class:`Alarm`; the connection that carries it registers
with the alarm, and one watchdog thread per process shuts that connection's socket down
when the deadline passes, so the blocked read fails at once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .wire import Response


class Alarm:
    """The deadline of one request; ``fired`` once it passed before the request ended."""

    __slots__ = ("connection", "deadline", "done", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: _Watched | None = None
        self.done = False
        self.fired = False


#: Disarmed alarms are dropped from the watchdog's heap once this many have piled up.
_COMPACT = 1024


class _Watchdog:
    """Shuts down the connections of alarms whose deadline passed."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._alarms: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._disarmed = 0  # since the heap was last rid of disarmed alarms

    def arm(self, seconds: float) -> Alarm:
        alarm = Alarm(time.monotonic() + seconds)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="objstore-s3-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._alarms, (alarm.deadline, next(self._order), alarm))
            if self._alarms[0][2] is alarm:
                self._wake.notify()
        return alarm

    def attach(self, alarm: Alarm, connection: _Watched) -> None:
        """Make ``connection`` the one that ``alarm`` shuts down."""
        with self._lock:
            if alarm.connection is not None and alarm.connection.alarm is alarm:
                alarm.connection.alarm = None
            alarm.connection = connection
            connection.alarm = alarm
            if alarm.fired:
                _shut_down(connection)

    def detach(self, connection: _Watched) -> None:
        """The connection goes back to its pool: no alarm may shut it down any more."""
        with self._lock:
            connection.alarm = None

    def disarm(self, alarm: Alarm) -> None:
        with self._lock:
            alarm.done = True
            if alarm.connection is not None and alarm.connection.alarm is alarm:
                alarm.connection.alarm = None
            alarm.connection = None
            # The watchdog sleeps until the first deadline, so disarmed alarms pile up
            # behind it: drop them every _COMPACT disarms. The first deadline can only
            # move later, so the sleeping watchdog needs no wake-up.
            self._disarmed += 1
            if self._disarmed >= _COMPACT:
                self._disarmed = 0
                self._alarms = [entry for entry in self._alarms if not entry[2].done]
                heapq.heapify(self._alarms)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._alarms and self._alarms[0][2].done:
                    heapq.heappop(self._alarms)
                if not self._alarms:
                    self._wake.wait()
                    continue
                deadline, _, alarm = self._alarms[0]
                now = time.monotonic()
                if now < deadline:
                    self._wake.wait(deadline - now)
                    continue
                heapq.heappop(self._alarms)
                alarm.fired = True
                if alarm.connection is not None and alarm.connection.alarm is alarm:
                    _shut_down(alarm.connection)


def _shut_down(connection: _Watched) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        # socket.socket's own shutdown: an SSLSocket's would also drop its TLS state
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = _Watchdog()
_current = threading.local()


class _Deadline:
    """The context of :func:`deadline` (a class: a generator-based one costs more per request)."""

    __slots__ = ("_alarm", "_previous", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __enter__(self) -> Alarm:
        self._alarm = alarm = WATCHDOG.arm(self._seconds)
        self._previous: Alarm | None = getattr(_current, "alarm", None)
        _current.alarm = alarm
        return alarm

    def __exit__(self, *exc_info: object) -> None:
        _current.alarm = self._previous
        WATCHDOG.disarm(self._alarm)


def deadline(seconds: float) -> contextlib.AbstractContextManager[Alarm]:
    """Bound what runs inside to ``seconds``: requests started inside fail once it passes."""
    return _Deadline(seconds)


#: A body of at most this many bytes goes out in one send with the request's head.
SMALL_BODY = 64 << 10


class _Watched:
    """A connection that registers with the alarm of the request it carries, and sends a
    small body in the same ``send`` as the head (urllib3 sends them apart: one more
    system call and one more TCP segment, with its wake-up of the server, per request).
    Its answers' heads are read by :class:`objstore.s3.wire.Response`."""

    response_class: Any = Response
    alarm: Alarm | None = None
    _hold = False
    _held: bytes | None = None

    def request(self, method: str, url: str, body: Any = None, *args: Any, **kwargs: Any) -> None:
        alarm: Alarm | None = getattr(_current, "alarm", None)
        if alarm is not None:
            WATCHDOG.attach(alarm, self)
        self._hold = isinstance(body, bytes | bytearray) and 0 < len(body) <= SMALL_BODY
        try:
            super().request(method, url, body, *args, **kwargs)  # type: ignore[misc]
        finally:
            self._hold, self._held = False, None

    def send(self, data: Any) -> None:
        """Send ``data``; while a small body is due, keep the head to send with it."""
        if self._hold:
            if self._held is None:
                self._held = bytes(data)
                return
            data, self._hold, self._held = self._held + data, False, None
        super().send(data)  # type: ignore[misc]


class _Connection(_Watched, HTTPConnection):
    pass


class _TLSConnection(_Watched, HTTPSConnection):
    pass


class _ReleasingPool:
    def _put_conn(self, conn: Any) -> None:
        if isinstance(conn, _Watched):
            WATCHDOG.detach(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _Pool(_ReleasingPool, HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(_ReleasingPool, HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def pool_manager(timeout: float, maxsize: int) -> urllib3.PoolManager:
    """A pool whose connections obey :func:`deadline`; it never retries on its own."""
    manager = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(10.0, timeout), read=timeout),
        maxsize=maxsize,
        retries=False,
    )
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    return manager


def watch(response: urllib3.BaseHTTPResponse, alarm: Alarm) -> None:
    """Let ``alarm`` shut down the connection that carries ``response``'s body."""
    connection = getattr(response, "connection", None)
    if isinstance(connection, _Watched):
        WATCHDOG.attach(alarm, connection)
