"""The listening socket of a server, which keeps its connections to cut them, and hypercorn's
configuration over it."""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any

from hypercorn.config import Config, Sockets


class _Listener(socket.socket):
    """A listening socket that keeps the connections it accepts, by peer, to cut one at once."""

    def __init__(self, family: int) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.connections: weakref.WeakValueDictionary[tuple[str, int], socket.socket] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def accept(self) -> tuple[socket.socket, Any]:
        connection, peer = super().accept()
        # Each answer at once: asyncio sets this only on sockets made with IPPROTO_TCP, and
        # without it an answer's second write waits for the client's delayed ACK (40 ms).
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections[(str(peer[0]), int(peer[1]))] = connection
        return connection, peer

    def cut(self, peer: Any) -> None:
        """Shut the connection from ``peer`` down both ways: the loop sees it end, whatever it
        still had to send."""
        with self._lock:
            connection = self.connections.get((str(peer[0]), int(peer[1]))) if peer else None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def cut_all(self) -> None:
        """Shut every connection down both ways."""
        with self._lock:
            connections = list(self.connections.values())
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Config(Config):
    """Hypercorn's configuration, serving on a listener made beforehand."""

    def __init__(self, listener: _Listener) -> None:
        super().__init__()
        self._listener = listener

    def create_sockets(self) -> Sockets:
        return Sockets(secure_sockets=[], insecure_sockets=[self._listener], quic_sockets=[])
