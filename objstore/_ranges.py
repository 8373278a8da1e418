"""Byte ranges: the rules for offsets, and a seekable stream of one range of an object."""

from __future__ import annotations

import abc
import io
import os
from typing import Any

from .errors import InvalidArgumentError


def check_offset(name: str, value: object) -> int:
    """``value`` if it is a byte offset (an int, 0 or more), else ``InvalidArgumentError``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} is an int, not {value!r}")
    if value < 0:
        raise InvalidArgumentError(f"{name} is a byte offset of 0 or more, not {value}")
    return value


def check_range(start: object, end: object) -> tuple[int, int | None]:
    """The range ``[start, end)`` with ``end`` raised to ``start`` if below it (an empty range)."""
    first = check_offset("start", start)
    if end is None:
        return first, None
    return first, max(first, check_offset("end", end))


def clamp(start: int, end: int | None, size: int) -> tuple[int, int]:
    """The range cut to an object of ``size`` bytes: Python's slice rules."""
    low = min(start, size)
    return low, size if end is None else max(low, min(end, size))


def seek_target(offset: int, whence: int, position: int, length: int) -> int:
    """Where a seek of a range of ``length`` bytes, now at ``position``, goes (Python's rules);
    ``InvalidArgumentError`` for a bad ``whence`` or a place before the start."""
    if whence == os.SEEK_SET:
        target = offset
    elif whence == os.SEEK_CUR:
        target = position + offset
    elif whence == os.SEEK_END:
        target = length + offset
    else:
        raise InvalidArgumentError(f"whence is 0, 1 or 2, not {whence!r}")
    if target < 0:
        raise InvalidArgumentError(f"cannot seek to {target}, before the start of the range")
    return target


class RangeReader(io.RawIOBase):
    """A seekable stream of the bytes ``[start, end)`` of one object: position 0 is ``start``.

    A subclass reads at absolute offsets (:meth:`_read_at`). Seeking past the end is
    allowed (reads there return nothing); a negative position is an ``InvalidArgumentError``.
    """

    def __init__(self, key: str, start: int, end: int) -> None:
        self._key = key
        self._start = start
        self._end = end
        self._offset = start  # absolute

    @abc.abstractmethod
    def _read_at(self, offset: int, count: int) -> bytes:
        """Up to ``count`` (more than 0) bytes at absolute ``offset``; fewer only at the object's end."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._offset - self._start

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = seek_target(offset, whence, self.tell(), self._end - self._start)
        self._moved(self._start + target)
        self._offset = self._start + target
        return target

    def _moved(self, offset: int) -> None:
        """The position is about to become ``offset``: a hook for readers that stream."""

    def _readinto_at(self, offset: int, view: memoryview) -> int:
        """Fill ``view`` (not empty) from absolute ``offset``; how many bytes (fewer only at the end)."""
        data = self._read_at(offset, len(view))
        view[: len(data)] = data
        return len(data)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._end - self._offset)
        if count <= 0:
            return 0
        count = self._readinto_at(self._offset, view[:count])
        self._offset += count
        return count

    def readall(self) -> bytes:
        chunks = []
        while self._offset < self._end and (data := self._read_at(self._offset, self._end - self._offset)):
            chunks.append(data)
            self._offset += len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
