"""Turn the ``data`` argument of ``Storage.write`` into a stream of byte chunks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from .errors import InvalidArgumentError, SizeMismatchError

Data = bytes | bytearray | memoryview | BinaryIO | Iterable[bytes]
"""What ``Storage.write`` accepts: bytes, a binary file-like object, or an iterable of bytes."""

CHUNK_SIZE = 1 << 20


def check_size(size: int | None) -> None:
    """Raise :class:`InvalidArgumentError` unless ``size`` is None or a count of bytes."""
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidArgumentError(f"size is None or an int >= 0, not {size!r}")


def iter_chunks(
    key: str, data: Data, size: int | None, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes | memoryview]:
    """The bytes to store, as chunks of at most ``chunk_size`` bytes (larger for bytes data).

    With ``size`` set, yields exactly ``size`` bytes, or raises :class:`SizeMismatchError`
    (at once for bytes data, else once the source ends early).
    """
    check_size(size)
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        if size is not None:
            if len(view) < size:
                raise SizeMismatchError(key, size, len(view))
            view = view[:size]
        return iter((view,) if len(view) else ())
    if isinstance(data, str):
        raise InvalidArgumentError(
            f"data for {key!r} is bytes, a binary file or an iterable of bytes, not str"
        )
    if hasattr(data, "read"):
        return _read_file(key, cast(BinaryIO, data), size, chunk_size)
    if not isinstance(data, Iterable):
        raise InvalidArgumentError(
            f"data for {key!r} is bytes, a binary file or an iterable of bytes, not {type(data).__name__}"
        )
    return _read_iterable(key, data, size)


def _read_file(key: str, data: BinaryIO, size: int | None, chunk_size: int) -> Iterator[bytes]:
    remaining = size
    while remaining is None or remaining > 0:
        want = chunk_size if remaining is None else min(chunk_size, remaining)
        chunk = data.read(want)
        if not isinstance(chunk, (bytes, bytearray)):
            raise InvalidArgumentError(
                f"data for {key!r} must be opened in binary mode: read() returned {type(chunk).__name__}"
            )
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
        yield bytes(chunk)
    if remaining:
        assert size is not None
        raise SizeMismatchError(key, size, size - remaining)


def _read_iterable(key: str, data: Iterable[bytes], size: int | None) -> Iterator[bytes | memoryview]:
    got = 0
    for chunk in data:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"data for {key!r} yielded {type(chunk).__name__}, not bytes")
        view = memoryview(chunk).cast("B")
        if size is not None and got + len(view) >= size:
            yield view[: size - got]
            return
        got += len(view)
        if len(view):
            yield view
    if size is not None and got < size:
        raise SizeMismatchError(key, size, got)
