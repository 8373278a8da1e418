"""The server: a :class:`JsonApp` on hypercorn, its asyncio loop in a thread of its own, within
bounds on idle, trickling and stalled clients (docs/runservice.md, "Bounded waits")."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from hypercorn.asyncio import serve

from runstore.contract.http.server.app import JsonApp
from runstore.contract.http.server.asgi import _Asgi
from runstore.contract.http.server.listener import _Config, _Listener

log = logging.getLogger(__name__)

THREADS = 16
"""A server's worker threads: how many blocking handlers and reads run at once (more wait)."""
KEEP_ALIVE_TIMEOUT = 10.0
"""Seconds a connection may be idle, or take to send a request's head, before it is closed."""
READ_TIMEOUT = 30.0
"""Seconds one read of a request body may wait; all of it must arrive within this and
``received / MIN_RATE`` seconds."""
SEND_TIMEOUT = 30.0
"""Seconds one write of an answer may wait for the client to read; past them, the connection is cut."""
GRACE = 1.0
"""Seconds :meth:`ServerThread.stop` lets requests end once their connections are cut (then cancels them)."""
STOP_TIMEOUT = 10.0
"""Seconds :meth:`ServerThread.stop` waits for the server's threads."""
BACKLOG = 1024


class ServerThread:
    """A hypercorn server for ``app`` on ``host:port`` (0: a free port), its asyncio loop in a
    thread of its own, blocking work in ``threads`` worker threads.

    A request waiting (a long poll, a followed log, a slow client) holds a coroutine, no
    thread. A connection idle, or still sending its request's head, is closed after
    ``keep_alive_timeout`` seconds; a read of a request body may wait ``read_timeout`` seconds
    and the whole body arrive within ``read_timeout + received / MIN_RATE`` seconds; a write
    of an answer may wait ``send_timeout`` seconds for the client to read, past which the
    connection is cut.
    """

    def __init__(
        self,
        app: JsonApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threads: int = THREADS,
        keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = _Listener(family)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(BACKLOG)
        except BaseException:
            self._listener.close()
            raise
        address = self._listener.getsockname()
        self._host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        self._port: int = address[1]
        self._config = _Config(self._listener)
        self._config.keep_alive_timeout = keep_alive_timeout
        self._config.graceful_timeout = GRACE
        self._config.errorlog = log
        self._config.include_server_header = False
        self._asgi = _Asgi(app, self._listener, read_timeout, send_timeout)
        self._threads = threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=f"server {self.url}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> ServerThread:
        self._thread.start()
        self._running.wait()
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        workers = ThreadPoolExecutor(self._threads, thread_name_prefix=f"server {self._port} worker")
        loop.set_default_executor(workers)
        try:
            loop.run_until_complete(self._main())
        except Exception:
            log.exception("the server at %s failed", self.url)
        finally:
            try:
                for task in (tasks := asyncio.all_tasks(loop)):
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                workers.shutdown(wait=True, cancel_futures=True)
                self._listener.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._running.set()
        await serve(cast(Any, self._asgi), self._config, shutdown_trigger=self._stopping.wait)

    def stop(self) -> None:
        """Close the listening socket and cut every connection; requests still running then
        are cancelled :data:`GRACE` seconds later.

        Waits at most :data:`STOP_TIMEOUT` seconds for the server's threads (a blocking
        handler still running then is left to its thread, logged); a second call does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._loop is None or self._stopping is None:
            self._listener.close()
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._listener.cut_all()
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            log.warning("the server at %s did not stop within %g s", self.url, STOP_TIMEOUT)
