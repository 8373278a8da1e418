"""``bench/latency_proxy.py``'s proxy, counting the S3 requests it relays by kind.

A kind is the request's method, except that a GET of the bucket itself (no key) that lists
(``list-type``, ``prefix``, ``delimiter``, ``marker`` or ``continuation-token`` in its
query, or no query at all) is a ``LIST``, and a POST of the bucket with ``delete`` in its
query (a batch delete) is a ``DELETE``. The proxy must be reached path-style
(``http://host:port/bucket/key``), as minio reaches an IP address.
"""

from __future__ import annotations

import collections
import io
import socket
import threading
from urllib.parse import parse_qs, urlsplit

from latency_proxy import LatencyProxy

_LISTING = frozenset({"list-type", "prefix", "delimiter", "marker", "continuation-token", "start-after"})


def request_kind(request_line: str) -> str:
    """The kind of an S3 request from its request line, e.g. ``GET /bucket/key HTTP/1.1``."""
    method, _, rest = request_line.partition(" ")
    method = method.upper()
    target = rest.rpartition(" ")[0] or rest
    parts = urlsplit(target)
    names = set(parse_qs(parts.query, keep_blank_values=True))
    bucket_only = "/" not in parts.path.strip("/")
    if method == "GET" and bucket_only and (names & _LISTING or not names):
        return "LIST"
    if method == "POST" and bucket_only and "delete" in names:
        return "DELETE"
    return method


class CountingProxy(LatencyProxy):
    """A :class:`LatencyProxy` that also counts the requests it relays by kind (:func:`request_kind`)."""

    def __init__(self, upstream: str, *, delay: float = 0.02, timeout: float = 120.0) -> None:
        super().__init__(upstream, delay=delay, timeout=timeout)
        self._kinds: collections.Counter[str] = collections.Counter()
        self._kinds_lock = threading.Lock()

    def kinds(self) -> collections.Counter[str]:
        """Requests relayed so far (or being relayed), by kind: a copy."""
        with self._kinds_lock:
            return collections.Counter(self._kinds)

    def _relay(
        self, client: socket.socket, reader: io.BufferedReader, head: list[str], length: int | None
    ) -> bool:
        with self._kinds_lock:
            self._kinds[request_kind(head[0])] += 1
        return super()._relay(client, reader, head, length)
