"""A streaming HTTP proxy on 127.0.0.1 that adds a fixed delay to every request: a far S3
server, made of a local one.

Each request waits ``delay`` seconds, then goes to the upstream server on a connection of
its own (``Connection: close``); request and answer bodies are relayed as they come, in
pieces of at most ``BLOCK`` bytes, never held whole. Client connections stay open between
requests. The proxy counts requests and the body bytes relayed each way. Optionally
(``bandwidth``, bytes a second) each request's bodies are paced to a rate, as a far server
serves one connection: then transfers gain from parallel connections as they do there. Bodies travel
with a ``Content-Length`` (what minio sends and moto answers); a request without one has
no body, and an answer without one is relayed until the server closes, then the client
connection is closed too.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from types import TracebackType
from typing import cast

BLOCK = 256 << 10
_MAX_HEAD = 64 << 10
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection"})


class _Closed(Exception):
    """The client went away, or sent what this proxy does not relay."""


class LatencyProxy:
    """Listens on a free port of 127.0.0.1 and relays to ``upstream`` (``host:port``), each
    request ``delay`` seconds late (and each body at most ``bandwidth`` bytes a second)."""

    def __init__(
        self, upstream: str, *, delay: float = 0.02, bandwidth: float | None = None, timeout: float = 120.0
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self.delay = delay
        self.bandwidth = bandwidth
        self.timeout = timeout
        self._lock = threading.Lock()
        self._requests = 0
        self._sent = 0  # request body bytes, client to server
        self._received = 0  # answer body bytes, server to client
        self._stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port``, where clients connect."""
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def counts(self) -> tuple[int, int, int]:
        """Requests relayed, request body bytes and answer body bytes."""
        with self._lock:
            return self._requests, self._sent, self._received

    def __enter__(self) -> LatencyProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(1)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(self.timeout)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        """Relay the requests of one client connection until it closes."""
        reader = _reader(client)
        try:
            while not self._stopping.is_set():
                head, length = _read_head(reader, request=True)
                if head is None:
                    return
                if self._stopping.wait(self.delay):
                    return
                if not self._relay(client, reader, head, length):
                    return
        except (_Closed, OSError, ValueError):
            pass
        finally:
            reader.close()
            with contextlib.suppress(OSError):
                client.close()

    def _relay(
        self, client: socket.socket, reader: io.BufferedReader, head: list[str], length: int | None
    ) -> bool:
        """Send one request upstream and its answer back; whether the client connection goes on."""
        upstream = socket.create_connection(self._upstream, timeout=self.timeout)
        try:
            lines = [line for line in head[1:] if _name(line) not in _HOP_BY_HOP]
            upstream.sendall("\r\n".join([head[0], *lines, "Connection: close", "", ""]).encode("latin-1"))
            sent = _copy(reader, upstream, length or 0, self.bandwidth)
            answer = _reader(upstream)
            try:
                response, answer_length = _read_head(answer, request=False)
                if response is None:
                    raise _Closed("the server closed without an answer")
                method = head[0].split(" ", 1)[0].upper()
                status = int(response[0].split(" ")[1])
                bodiless = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                keep = bodiless or answer_length is not None
                kept = [
                    line for line in response[1:] if line.partition(":")[0].strip().lower() not in _HOP_BY_HOP
                ]
                connection = "Connection: keep-alive" if keep else "Connection: close"
                client.sendall("\r\n".join([response[0], *kept, connection, "", ""]).encode("latin-1"))
                received = 0 if bodiless else _copy(answer, client, answer_length, self.bandwidth)
            finally:
                answer.close()
        finally:
            upstream.close()
        with self._lock:
            self._requests += 1
            self._sent += sent
            self._received += received
        return keep


def _read_head(reader: io.BufferedReader, *, request: bool) -> tuple[list[str] | None, int | None]:
    """The lines of a request's or answer's head (None at a clean end) and its Content-Length."""
    readline = reader.readline
    lines: list[str] = []
    size = 0
    for _ in range(1000):
        line = readline(_MAX_HEAD + 1)
        size += len(line)
        if size > _MAX_HEAD:
            raise _Closed("head too long")
        if not line:
            if lines:
                raise _Closed("cut in a head")
            return None, None
        if line in (b"\r\n", b"\n"):
            if not lines:
                continue  # stray blank lines between requests
            break
        lines.append(line.decode("latin-1").rstrip("\r\n"))
    else:
        raise _Closed("too many header lines")
    length = None
    for text in lines[1:]:
        if _name(text) == "transfer-encoding" and request:
            raise _Closed("chunked request bodies are not relayed")
        if _name(text) == "content-length":
            length = int(text.partition(":")[2].strip())
    return lines, length


def _reader(sock: socket.socket) -> io.BufferedReader:
    """A buffered reader of ``sock``."""
    return cast(io.BufferedReader, sock.makefile("rb", buffering=BLOCK))


def _name(line: str) -> str:
    """The lowercased name of a header line."""
    return line.partition(":")[0].strip().lower()


def _copy(source: io.BufferedReader, target: socket.socket, length: int | None, rate: float | None) -> int:
    """Relay ``length`` bytes (all, until the source ends, for None) in pieces, at most ``rate``
    bytes a second if given; how many."""
    read = source.read1
    started = time.monotonic()
    done = 0
    limit = length if length is not None else 1 << 62
    for _ in range(limit + 1):  # each piece is at least a byte
        if done >= limit:
            break
        piece = read(min(BLOCK, limit - done))
        if not piece:
            if length is not None:
                raise _Closed(f"a body ended at {done} of {length} bytes")
            break
        target.sendall(piece)
        done += len(piece)
        if rate:
            time.sleep(max(0.0, started + done / rate - time.monotonic()))
    return done


def main() -> None:
    """Run a proxy in front of ``host:port`` until interrupted (``--delay`` seconds, 0.02)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("upstream")
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--bandwidth", type=float, help="bytes a second, each request")
    args = parser.parse_args()
    with LatencyProxy(args.upstream, delay=args.delay, bandwidth=args.bandwidth) as proxy:
        print(f"ENDPOINT {proxy.endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
