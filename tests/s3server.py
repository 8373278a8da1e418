"""A local S3 server for the tests and benchmarks: moto's, on 127.0.0.1, in a subprocess.

moto checks a conditional PUT and then stores it in two steps; a lock around every
request makes each one atomic, as on a real S3 server, so compare-and-swap races behave
as they would there. Run as ``python -m tests.s3server``: it binds a free port on
127.0.0.1 (or ``--port``), prints ``PORT <n>`` once serving, and stops on SIGTERM.

``--concurrent`` (``start(serialized=False)``) is for benchmarks only, a model of a far
server whose own work does not limit the client: no lock around requests, and a ranged
GET reads only its range of the stored bytes (moto reads the whole object for each one,
then slices), completing a multipart upload copies its parts once into the object (moto
copies the whole object several times), and objects up to 4 GiB stay in memory. The
answers are moto's own (tests/test_s3server_modes.py); conditional writes are then not
atomic: the tests use the default.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


def _serialized(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def serialized_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            body = app(environ, start_response)
            try:
                return list(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serialized_app


class _StoredRange:
    """A key's bytes as moto's ``_handle_range_header`` uses a GET's body: its ``len`` and
    one slice, read from the key's buffer only when sliced (``bytes()`` reads them all)."""

    def __init__(self, key: Any) -> None:
        self._key = key
        self._size: int = key.size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, part: slice) -> bytes:
        start, stop, step = part.indices(self._size)
        assert step == 1
        return _read_stored(self._key, start, max(stop - start, 0))

    def __bytes__(self) -> bytes:
        return _read_stored(self._key, 0, self._size)


def _read_stored(key: Any, offset: int, count: int) -> bytes:
    """``count`` bytes at ``offset`` of a moto key's buffer (a SpooledTemporaryFile), under the
    key's lock, without moving its position (moto's etag reads it without the lock)."""
    with key.lock:
        stored = key._value_buffer._file
        if isinstance(stored, io.BytesIO):
            with stored.getbuffer() as view:
                return bytes(view[offset : offset + count])
        stored.flush()  # rolled over to a file: what is still buffered, to the file
        pieces = []
        while count > 0:
            piece = os.pread(stored.fileno(), count, offset)
            if not piece:
                break
            pieces.append(piece)
            offset += len(piece)
            count -= len(piece)
        return b"".join(pieces)


def _serve_ranges_in_place() -> None:
    """Patch moto, in this process, so that a GET with a Range header reads only its range.

    ``S3Response.get_object`` answers with ``key.value``, a copy of all the stored bytes, and
    ``key_response`` then slices it in ``_handle_range_header``: a 1 MiB range of a 256 MiB
    object costs a 256 MiB read. While ``get_object`` runs for a request with a Range header,
    ``FakeKey.value`` gives a ``_StoredRange`` instead, which that slicing reads in place; the
    status, headers, 416 and If-Match checks stay moto's own. An answer that is not sliced
    (a range moto serves whole: several ranges, an unparsable one, ``partNumber``) is read
    whole before it leaves ``key_response``, as moto would have sent it.
    """
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    ranged = threading.local()
    stored_value: property = FakeKey.value  # type: ignore[assignment]
    getter, setter = stored_value.fget, stored_value.fset
    assert getter is not None

    def value(key: Any) -> Any:
        return _StoredRange(key) if getattr(ranged, "on", False) else getter(key)

    original_get_object = S3Response.get_object
    original_key_response = S3Response.key_response

    def get_object(self: Any) -> Any:
        ranged.on = bool(self.headers.get("range"))
        try:
            return original_get_object(self)
        finally:
            ranged.on = False

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        status, answer_headers, content = original_key_response(self, request, full_url, headers)
        if isinstance(content, _StoredRange):
            content = bytes(content)
        return status, answer_headers, content

    FakeKey.value = property(value, setter)  # type: ignore[assignment, method-assign]
    S3Response.get_object = get_object  # type: ignore[method-assign]
    S3Response.key_response = key_response  # type: ignore[method-assign]


def _stored_pieces(key: Any) -> Iterator[Any]:
    """A moto key's stored bytes in order, under the key's lock: a view of its memory buffer,
    or 16 MiB reads of the file it rolled over to."""
    with key.lock:
        stored = key._value_buffer._file
        if isinstance(stored, io.BytesIO):
            with stored.getbuffer() as view:
                yield view
            return
        stored.flush()
        offset = 0
        while piece := os.pread(stored.fileno(), 16 << 20, offset):
            yield piece
            offset += len(piece)


class _Joined:
    """A completed multipart upload's bytes, as moto's ``FakeKey.value`` setter is given them:
    already in the buffer (a SpooledTemporaryFile) the new key is to keep."""

    def __init__(self, buffer: Any, size: int) -> None:
        self.buffer = buffer
        self.size = size

    def __len__(self) -> int:
        return self.size


def _complete_multipart_in_place() -> None:
    """Patch moto, in this process, so that completing a multipart upload copies its bytes once.

    ``FakeMultipart.complete`` copies each part out of its buffer twice, joins them twice
    (one ``bytearray`` for the object, one for its checksum), copies both joins to ``bytes``,
    and the new key's buffer copies the object again: about 1 s for 256 MiB. Here ``complete``
    checks the parts exactly as moto does (same errors, same order), answers the same ETag
    (the MD5 of the parts' MD5s, ``-N``) and checksum details, and writes the parts one after
    the other into a buffer like the one the new key makes, which the ``FakeKey.value``
    setter then keeps: one copy. It must copy there: moto closes the parts' buffers before it
    makes the key. The whole-object checksum moto always keeps (CRC64NVME by default, which is
    a CRC32 without awscrt, as here) is then a CRC32 of the pieces as they are copied, the
    same value as over the joined bytes (0.08 s for 256 MiB; unasked for, as by objstore, moto
    shows only its type, but the key keeps the same value); any other whole-object algorithm,
    or a COMPOSITE checksum (per part), is moto's own builder's.
    """
    from moto.core.compat import HAS_CRT
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import FakeKey, FakeMultipart, MultipartChecksumBuilder
    from moto.settings import S3_UPLOAD_PART_MIN_SIZE, get_s3_default_key_buffer_size

    def complete(self: Any, body: Iterable[tuple[int, str]]) -> tuple[_Joined, str, Any]:
        parts: list[Any] = []
        md5s = bytearray()
        for number, etag in body:  # moto's checks, in moto's order
            part = self.parts.get(number)
            part_etag = None
            if part is not None:
                part_etag = part.etag.replace('"', "")
                etag = etag.replace('"', "")
            if part is None or part_etag != etag:
                raise InvalidPart()
            if parts and parts[-1].contentsize < S3_UPLOAD_PART_MIN_SIZE:
                raise EntityTooSmall()
            md5s.extend(bytes.fromhex(part_etag))
            parts.append(part)
        if not parts:
            raise MalformedXML
        checksum = MultipartChecksumBuilder(
            self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
        )
        algorithm = checksum.checksum_algorithm
        crc32 = algorithm == "CRC32" or (algorithm == "CRC64NVME" and not HAS_CRT)
        crc32 = crc32 and checksum.checksum_type != "COMPOSITE"
        buffer = tempfile.SpooledTemporaryFile(get_s3_default_key_buffer_size())  # noqa: SIM115 (the key's)
        crc = 0
        for part in parts:
            for piece in _stored_pieces(part):
                buffer.write(piece)
                if crc32:  # what moto's compute_checksum gives for the joined bytes
                    crc = binascii.crc32(piece, crc)
            if not crc32:
                checksum.addPart(part.value)
        details: tuple[str, str, int] | None
        if crc32:
            details = (checksum.checksum_type, base64.b64encode(crc.to_bytes(4, "big")).decode(), 1)
        else:
            details = checksum.build()
        etag = hashlib.md5(md5s, usedforsecurity=False).hexdigest()
        return _Joined(buffer, buffer.tell()), f"{etag}-{len(parts)}", details

    stored_value: property = FakeKey.value  # type: ignore[assignment]
    setter = stored_value.fset
    assert setter is not None

    def set_value(key: Any, new_value: Any) -> None:
        if not isinstance(new_value, _Joined):
            setter(key, new_value)
            return
        key._value_buffer.close()
        key._value_buffer = new_value.buffer
        key.contentsize = new_value.size

    FakeKey.value = property(stored_value.fget, set_value)  # type: ignore[assignment, method-assign]
    FakeMultipart.complete = complete  # type: ignore[assignment, method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="benchmarks only: no request lock, ranges read in place, parts joined once",
    )
    args = parser.parse_args(argv)
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app: Callable[..., Iterable[bytes]] = DomainDispatcherApplication(create_backend_app)
    if args.concurrent:
        _serve_ranges_in_place()
        _complete_multipart_in_place()
        # moto keeps a key's bytes in memory up to this size, then in a temporary file: keep
        # a benchmark's objects (and its parts) off the disk the client also writes to.
        os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(4 << 30))
    else:
        app = _serialized(app)
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


@attrs.frozen
class RunningServer:
    """A started server: ``endpoint`` is ``host:port``."""

    process: subprocess.Popen[str]
    endpoint: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(timeout: float = 60.0, *, serialized: bool = True) -> RunningServer:
    """Start the server in a subprocess and wait until it listens (``serialized=False``:
    ``--concurrent``, for benchmarks only)."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3server", *([] if serialized else ["--concurrent"])],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        line = process.stdout.readline()
    finally:
        timer.cancel()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the S3 test server did not start (exit code {process.wait()})")
    return RunningServer(process, f"127.0.0.1:{int(line.split()[1])}")


if __name__ == "__main__":
    main()
