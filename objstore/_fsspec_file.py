"""The file objects of the fsspec bridge: reads of one version, writes as one atomic upload."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

from ._fsspec_cache import SequentialReadahead
from .errors import InvalidArgumentError, NotExistError
from .info import ObjectInfo
from .storage import Storage

if TYPE_CHECKING:
    from .fsspec import ObjstoreFileSystem

MODES = ("rb", "wb", "xb")
#: The cache of files opened for reading, unless ``cache_type`` names another.
DEFAULT_CACHE_TYPE = SequentialReadahead.name
_POLL_SECONDS = 0.05


def file_info(info: ObjectInfo) -> dict[str, Any]:
    """An object as fsspec describes a file (with its content type and metadata where known)."""
    details = {
        "name": info.key,
        "size": info.size,
        "type": "file",
        "etag": info.etag,
        "last_modified": info.last_modified,
        "mtime": info.last_modified.timestamp(),
    }
    if info.content_type is not None:
        details["content_type"] = info.content_type
    if info.metadata is not None:
        details["metadata"] = dict(info.metadata)
    return details


class _Aborted(Exception):
    """The file's writer gave up: the upload's source raises this, so nothing is stored."""


_END = object()
_ABORT = object()


class _Upload:
    """One ``Storage.write`` in its own thread, fed chunk by chunk.

    The file streams (one chunk queued at a time) while the write stays one atomic
    ``write`` call: an aborted upload makes its source raise, and the backend stores
    nothing.
    """

    def __init__(self, storage: Storage, key: str, conditions: dict[str, Any]) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._etag = ""
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(storage, key, conditions), name=f"objstore upload {key!r}", daemon=True
        )
        self._thread.start()

    def _run(self, storage: Storage, key: str, conditions: dict[str, Any]) -> None:
        try:
            self._etag = storage.write(key, self._chunks(), **conditions)
        except BaseException as exc:  # handed over to the writing thread
            self._error = exc

    def _chunks(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not _END:
            if item is _ABORT:
                raise _Aborted
            assert isinstance(item, bytes)
            yield item

    def _put(self, item: object) -> None:
        while True:
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise self._error or RuntimeError("the upload thread ended early") from None

    def send(self, chunk: bytes) -> None:
        """Hand ``chunk`` to the write; raise the write's error if it failed."""
        self._put(chunk)

    def finish(self) -> str:
        """End the data and wait for the write; its etag."""
        self._put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._etag

    def abort(self) -> None:
        """Make the write fail, storing nothing, and wait for it."""
        while self._thread.is_alive():
            try:
                self._queue.put(_ABORT, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        self._thread.join()


class ObjstoreFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec has no types
    """A file of :class:`~objstore.fsspec.ObjstoreFileSystem`, opened in ``rb``, ``wb`` or ``xb`` mode.

    Reading fetches by ranged reads through fsspec's cache (``cache_type``, by default
    ``"objstore-readahead"``: what a read after a seek asks for, at least 64 KiB, and a
    readahead growing to ``block_size``, 5 MiB by default, while reads run on), so a seek
    never reads from the start again. It serves the version of the object that it saw at
    open: each fetch is a read pinned to its etag (``Storage.read_range(..., if_match=)``;
    on S3 a GET with ``If-Match``); if the object is replaced while the file reads it, the
    read raises ``ObjectChangedError`` (``NotExistError`` if it is deleted).
    Writing streams the data into one atomic ``Storage.write``, committed when the file
    closes (or when a transaction commits); its own ``with`` block, left by an exception,
    stores nothing. ``xb`` claims the key at open with a create-only write of an empty
    object (so ``FileExistsError`` is raised there) and replaces that claim, and only it,
    when the file closes.
    """

    def __init__(
        self,
        fs: ObjstoreFileSystem,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = "default",
        autocommit: bool = True,
        cache_type: str = DEFAULT_CACHE_TYPE,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(f"objstore files open in mode 'rb', 'wb' or 'xb', not {mode!r}")
        self.storage: Storage = fs.storage
        self._upload: _Upload | None = None
        self._whole: bytes | None = None
        self._claim: str | None = None
        self._state = "open"
        kwargs.pop("size", None)  # known from the object itself
        size = None
        if mode == "rb":
            info = self.storage.stat(path)
            size = info.size
            self._details = file_info(info)
        elif mode == "xb":
            self._claim = self.storage.write(path, b"", if_none_match=True)
        super().__init__(
            fs,
            path,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_type=cache_type,
            cache_options=cache_options,
            size=size,
            **kwargs,
        )

    # -- reading ---------------------------------------------------------------

    def _fetch_range(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)`` of the version described at open, by one ranged read."""
        if start >= end:
            return b""
        return self.storage.read_range(self.path, start, end, if_match=self.details["etag"])

    # -- writing ---------------------------------------------------------------

    def _conditions(self) -> dict[str, Any]:
        return {} if self._claim is None else {"if_match": self._claim}

    def _initiate_upload(self) -> None:
        """Nothing to do: the upload starts with the first full block (see ``_upload_chunk``)."""

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if final and self._upload is None:
            self._whole = data  # the whole file: one plain write, at commit
        else:
            if self._upload is None:
                self._upload = _Upload(self.storage, self.path, self._conditions())
            self._upload.send(data)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Store what was written, as one atomic write (a discarded file stores nothing)."""
        if self._state != "open":
            return
        self._state = "committed"
        try:
            if self._upload is not None:
                self._upload.finish()
            else:
                self.storage.write(self.path, self._whole or b"", **self._conditions())
        except BaseException:
            self._release_claim()
            raise
        finally:
            self._whole = None

    def discard(self) -> None:
        """Store nothing, and give up the claim of an ``xb`` file."""
        if self._state != "open":
            return
        self._state = "discarded"
        self._whole = None
        if self._upload is not None:
            self._upload.abort()
        self._release_claim()

    def _release_claim(self) -> None:
        if self._claim is None:
            return
        with contextlib.suppress(NotExistError):
            if self.storage.stat(self.path).etag == self._claim:
                self.storage.delete(self.path)

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is not None and self.writable():
            self.discard()
            self.closed = True
        else:
            self.close()
