"""What a command's arguments name: an object or prefix of a store, a local path, or stdin/stdout.

``s3://bucket/key`` names ``key`` in ``bucket`` (options may follow as ``?name=value``, as in
:func:`objstore.from_url`). ``file:///path`` names a key of a posix store: the store is the
first folder down the path that holds one (``data/`` and ``locks``), and the key is the
rest of the path. Anything else is a local path, and ``-`` is stdin or stdout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import attrs

from ..config import from_url
from ..errors import ConfigError
from ..storage import Storage
from .failures import UsageError, naming

STDIO = "-"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@attrs.frozen(eq=False)
class StoreLocation:
    """A key (or prefix) of an open store; ``base`` + key is its URL, ``store_id`` tells stores apart."""

    store: Storage
    key: str
    base: str
    store_id: tuple[str, ...]

    def url(self, key: str | None = None) -> str:
        """The URL of ``key`` (default: this location's own)."""
        return self.base + (self.key if key is None else key)

    def at(self, key: str) -> StoreLocation:
        """The location of another key of the same store."""
        return attrs.evolve(self, key=key)

    @property
    def is_prefix(self) -> bool:
        """Whether the key names a folder of keys rather than one object ("" or ending with "/")."""
        return not self.key or self.key.endswith("/")

    def folder(self) -> str:
        """The key as a folder prefix: "" or ending with "/"."""
        return self.key if self.is_prefix else self.key + "/"


@attrs.frozen
class LocalLocation:
    """A local path, or ``-`` for stdin or stdout."""

    path: str

    @property
    def is_stdio(self) -> bool:
        return self.path == STDIO

    def url(self) -> str:
        return self.path


Location = StoreLocation | LocalLocation


def _is_url(text: str) -> bool:
    """Whether ``text`` is a URL (of a store, or of a scheme no command takes)."""
    return bool(_SCHEME.match(text))


class Stores:
    """The stores a command's locations open, each once, closed together."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, ...], Storage] = {}

    def location(self, text: str, *, local: bool = False, create: bool = False) -> Location:
        """The location ``text`` names; a local path only if ``local``. ``create`` lets a
        ``file://`` URL outside any posix store name the root of a new one."""
        if local and not _is_url(text):
            return LocalLocation(text)
        return self.store_location(text, create=create)

    def store_location(self, text: str, *, create: bool = False) -> StoreLocation:
        """The store location ``text`` names (see :meth:`location`)."""
        if not _is_url(text):
            raise UsageError(f"{text!r} is a local path: this command takes s3://bucket/key or file:///path")
        with naming(text):
            return self._store_location(text, create)

    def _store_location(self, text: str, create: bool) -> StoreLocation:
        parts = urlsplit(text)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ConfigError(f"an s3 URL names a bucket, s3://bucket/key, not {text!r}")
            query = f"?{parts.query}" if parts.query else ""
            store_id: tuple[str, ...] = ("s3", parts.netloc, query)
            store = self._store(store_id, lambda: from_url(f"s3://{parts.netloc}{query}"))
            return StoreLocation(store, parts.path[1:], f"s3://{parts.netloc}/", store_id)
        if parts.scheme == "file":
            root, key = _posix_root(text, create=create)
            store_id = ("file", root)
            store = self._store(store_id, lambda: from_url(f"file://{root}"))
            return StoreLocation(store, key, f"file://{root.rstrip('/')}/", store_id)
        if parts.scheme == "memory":
            raise ConfigError(f"a memory:// store lives inside one process: {text!r} names nothing here")
        raise ConfigError(f"a store URL is s3://bucket/key or file:///path, not {text!r}")

    def _store(self, store_id: tuple[str, ...], open_store: Callable[[], Storage]) -> Storage:
        if store_id not in self._open:
            self._open[store_id] = open_store()
        return self._open[store_id]

    def close(self) -> None:
        for store in self._open.values():
            store.close()
        self._open.clear()


def _posix_root(text: str, *, create: bool) -> tuple[str, str]:
    """The root of the posix store that the ``file://`` URL ``text`` is in, and its key there."""
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(f"a file URL is file:///absolute/path, not {text!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"a file URL has no ?query or #fragment: {text!r}")
    path = unquote(parts.path, errors="strict")
    names = path.split("/")
    for count in range(1, len(names) + 1):  # from the top: keys may look like a store inside
        folder = "/".join(names[:count]) or "/"
        if _holds_store(folder):
            return os.path.normpath(folder), "/".join(names[count:])
    if create:
        return os.path.normpath(path), ""
    raise ConfigError(f"no posix store at or above {path!r} (a folder holding data/ and locks)")


def _holds_store(folder: str) -> bool:
    data, locks = os.path.join(folder, "data"), os.path.join(folder, "locks")
    return os.path.isdir(data) and not os.path.islink(data) and os.path.isfile(locks)
