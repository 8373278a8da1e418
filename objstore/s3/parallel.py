"""Whole S3 objects read with ranged GETs in parallel: ``read_bytes`` and ``download``.

The first GET asks for the first range (``part_size`` bytes) and learns the object's size
from its ``Content-Range``: an object that fits is read by that one request. The other
ranges go out with ``If-Match`` on the first answer's etag, up to ``max_concurrency`` at
once, so every byte is of one version (``ObjectChangedError`` otherwise). Each answer is
checked against its range and length and resumes where it was cut; the whole object is
checked against its digest (single-part MD5 etag, multipart etag, full-object checksum),
fed in order as the ranges before it complete.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol, cast

import attrs
import urllib3
from minio.error import S3Error

from .._download import read_at, resize, write_at
from ..errors import IntegrityError, ObjectChangedError
from ..info import ObjectInfo
from .answers import http_time, parsed_header
from .body import CHECKSUM_MODE, CHUNK, BodyCheck, ObjectReader, drop
from .failures import Failure
from .metadata import response_attributes

if TYPE_CHECKING:
    from .storage import S3Storage


class Sink(Protocol):
    """Where the bytes of an object go, at their offsets (from several threads at once)."""

    def prepare(self, size: int) -> None:
        """Make room for ``size`` bytes, dropping what an earlier try wrote."""

    def write_at(self, offset: int, data: memoryview) -> None:
        """Store ``data`` at ``offset``."""

    def read_at(self, offset: int, count: int) -> bytes:
        """The ``count`` bytes stored at ``offset``."""

    def put(self, data: bytes) -> None:
        """Store ``data`` as all the bytes, from offset 0."""


class MemorySink:
    """The object in memory, as one buffer whose bytes are returned without a copy."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._buffer = io.BytesIO()
        self._whole: bytes | None = None
        self._size = 0

    def prepare(self, size: int) -> None:
        with self._lock:
            self._buffer, self._whole, self._size = io.BytesIO(), None, size

    def write_at(self, offset: int, data: memoryview) -> None:
        with self._lock:
            if self._buffer.seek(0, io.SEEK_END) < self._size:  # allocated once, at its final size
                self._buffer.seek(self._size - 1)
                self._buffer.write(b"\0")
            self._buffer.seek(offset)
            self._buffer.write(data)

    def read_at(self, offset: int, count: int) -> bytes:
        with self._lock:
            self._buffer.seek(offset)
            return self._buffer.read(count)

    def put(self, data: bytes) -> None:
        with self._lock:
            self._whole = data

    def value(self) -> bytes:
        """All the bytes (the buffer's own, not a copy)."""
        with self._lock:
            return self._whole if self._whole is not None else self._buffer.getvalue()


class FileSink:
    """The object in an open local file, written with ``os.pwrite``."""

    def __init__(self, key: str, fd: int) -> None:
        self._key = key
        self._fd = fd

    def prepare(self, size: int) -> None:
        resize(self._fd, size, self._key)

    def write_at(self, offset: int, data: memoryview) -> None:
        write_at(self._fd, data, offset, self._key)

    def read_at(self, offset: int, count: int) -> bytes:
        return read_at(self._fd, count, offset, self._key)

    def put(self, data: bytes) -> None:
        write_at(self._fd, memoryview(data), 0, self._key)


@attrs.frozen
class _First:
    """The answer to the first GET: the object's size, its whole-object check (which holds
    the version's etag), and the reader of the first range (``[0, end)``), not yet read."""

    key: str
    response: urllib3.BaseHTTPResponse
    size: int
    check: BodyCheck
    reader: ObjectReader
    end: int

    def info(self) -> ObjectInfo:
        """What the answer says of the version."""
        attributes = response_attributes(self.response.headers)
        return ObjectInfo(
            key=self.key,
            size=self.size,
            last_modified=parsed_header(self.key, self.response, "Last-Modified", http_time),
            etag=self.check.etag,
            content_type=attributes.content_type,
            metadata=attributes.metadata,
        )


class _Stopped(Exception):
    """A range that gave up because another one failed."""


def read_bytes(storage: S3Storage, key: str) -> bytes:
    """The whole object, read with parallel ranged GETs; a body that fails its check, or a
    version replaced meanwhile, is read again (up to ``retries`` times)."""
    for last in storage._tries():
        sink = MemorySink(key)
        try:
            _transfer(storage, key, sink, ranged=True)
            return sink.value()
        except (IntegrityError, ObjectChangedError):
            if last:
                raise
    raise AssertionError("unreachable")


def download(storage: S3Storage, key: str, fd: int) -> ObjectInfo:
    """Write the whole object to ``fd`` with parallel ranged GETs (one plain GET, streamed, with
    ``max_concurrency=1``); its info. A body that fails its check is read again (up to
    ``retries`` times); a replaced version raises ``ObjectChangedError``."""
    for last in storage._tries():
        try:
            return _transfer(storage, key, FileSink(key, fd), ranged=storage.max_concurrency > 1).info()
        except IntegrityError:
            if last:
                raise
    raise AssertionError("unreachable")


def _transfer(storage: S3Storage, key: str, sink: Sink, *, ranged: bool) -> _First:
    """Copy one version of the object into ``sink``, checked; the first answer. Unless
    ``ranged``, the first GET asks for the whole object."""
    first = _open_first(storage, key, storage.part_size if ranged else None)
    size = first.size
    try:
        sink.prepare(size)
    except BaseException:
        first.reader.close()
        raise
    if first.end >= size:  # it fitted in the first answer: no other request, no thread
        if isinstance(sink, MemorySink):
            try:
                data = first.reader.readall()
            finally:
                first.reader.close()
            first.check.update(memoryview(data))
            sink.put(data)
        else:
            _copy(key, first.reader, 0, size, sink, threading.Event(), first.check)
        _verify(first.check, sink, 0, 0)
        return first
    step = storage.part_size
    spans = [(start, min(start + step, size)) for start in range(first.end, size, step)]
    _in_parallel(storage, key, first, spans, sink)
    return first


def _in_parallel(
    storage: S3Storage, key: str, first: _First, spans: list[tuple[int, int]], sink: Sink
) -> None:
    """Read the first range and ``spans`` with up to ``max_concurrency`` in flight, feeding the
    whole-object check in order; the first failure stops the rest and is raised."""
    stop = threading.Event()
    etag = first.check.etag

    def fetch(start: int, end: int) -> None:
        if stop.is_set():
            raise _Stopped
        reader = ObjectReader.open(storage, key, start, end, if_match=etag)
        _copy(key, reader, start, end, sink, stop)

    pool = ThreadPoolExecutor(storage.max_concurrency, thread_name_prefix="objstore-s3-range")
    running: dict[Future[None], tuple[int, int]] = {}
    finished: dict[int, int] = {}
    checked = 0  # the check has been fed the bytes before this offset
    pending = iter(spans)
    try:
        running[pool.submit(_copy, key, first.reader, 0, first.end, sink, stop)] = (0, first.end)
        for _ in range(len(spans) + 2):  # each round ends at least one range
            while len(running) < storage.max_concurrency and (span := next(pending, None)) is not None:
                running[pool.submit(fetch, *span)] = span
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                start, end = running.pop(future)
                future.result()
                finished[start] = end
            while checked in finished:
                end = finished.pop(checked)
                _feed(first.check, sink, checked, end)
                checked = end
        if checked != first.size:  # (each round ends a range: the loop cannot run out)
            raise IntegrityError(key, f"read {checked} of {first.size} bytes")
        _verify(first.check, sink, checked, checked)
    except BaseException:
        stop.set()  # ranges in flight end at their next chunk
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        first.reader.close()


def _open_first(storage: S3Storage, key: str, end: int | None) -> _First:
    """The first GET (retried): a ranged GET of the bytes before ``end``, or a plain GET for
    ``end=None`` and for an empty object (which has no byte to range over)."""

    def get() -> _First:
        headers = dict(CHECKSUM_MODE)
        if end is not None:
            headers["Range"] = f"bytes=0-{end - 1}"
        try:
            response = storage._request("GET", key, headers=headers, stream=True)
        except S3Error as exc:
            if exc.response is None or exc.response.status != 416:
                raise
            response = storage._request("GET", key, headers=dict(CHECKSUM_MODE), stream=True)
        try:
            return _first_of(storage, key, response, end)
        except BaseException:
            drop(response)
            raise

    return storage._retrying(key, get)


def _first_of(storage: S3Storage, key: str, response: urllib3.BaseHTTPResponse, end: int | None) -> _First:
    """The first answer read: its range checked, the version's info and whole-object check
    (its length only where the reader checks the digest: a whole-object read)."""
    reader = ObjectReader.of_answer(storage, key, response, 0, end)
    size = reader.size
    whole = response.status == 200 or size == reader.end  # then its headers are a whole answer's
    check = BodyCheck.of(key, response if whole else cast(urllib3.BaseHTTPResponse, _AsWhole(response, size)))
    if end is None:
        check = BodyCheck(key, size, check.etag)
    return _First(key, response, size, check, reader, size if end is None else min(end, size))


class _AsWhole:
    """The headers of an answer of the object's first range as a whole-object answer would
    carry them: the object's size as ``Content-Length``, and no checksum (one that comes
    with a part of the object is not the whole object's)."""

    def __init__(self, response: urllib3.BaseHTTPResponse, size: int) -> None:
        headers = urllib3.HTTPHeaderDict(response.headers)
        for name in [name for name in headers if name.lower().startswith("x-amz-checksum-")]:
            del headers[name]
        headers["Content-Length"] = str(size)
        self.headers = headers


def _copy(
    key: str,
    reader: ObjectReader,
    start: int,
    end: int,
    sink: Sink,
    stop: threading.Event,
    check: BodyCheck | None = None,
) -> None:
    """Copy the reader's range (``[start, end)`` of the object) into ``sink``, chunk by chunk
    (fed to ``check`` in order, if given)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    offset = start
    try:
        for _ in range(end - start + 1):  # every read but the last returns at least one byte
            if offset == end:
                return
            if stop.is_set():
                raise _Stopped
            count = reader.readinto(view[: min(CHUNK, end - offset)])
            if not count:
                break
            if check is not None:
                check.update(view[:count])
            sink.write_at(offset, view[:count])
            offset += count
        raise IntegrityError(key, f"a range ended at byte {offset}, not {end}")
    finally:
        reader.close()


def _feed(check: BodyCheck, sink: Sink, start: int, end: int) -> None:
    """Feed the bytes ``[start, end)`` of ``sink`` to ``check``, a chunk at a time."""
    if not check.has_digest:  # a check of the length only: nothing to read back
        return
    for offset in range(start, end, CHUNK):
        check.update(memoryview(sink.read_at(offset, min(CHUNK, end - offset))))


def _verify(check: BodyCheck, sink: Sink, start: int, end: int) -> None:
    """Feed the last bytes and check the whole object's digest (``IntegrityError``)."""
    _feed(check, sink, start, end)
    try:
        check.verify()
    except Failure as failure:
        raise failure.error from failure
