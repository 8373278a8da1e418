"""An in-memory backend: a flat namespace in a dict, for tests and examples."""

from __future__ import annotations

import bisect
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from ._listing import ListCursor, fold_levels
from ._ranges import RangeReader, clamp
from .attributes import DEFAULT_ATTRIBUTES, Attributes
from .errors import AlreadyExistsError, NotExistError, ObjectChangedError, PreconditionFailedError
from .info import CommonPrefix, ObjectInfo
from .storage import Chunks, Storage


class MemoryStorage(Storage):
    """Objects in this process's memory; any key S3 accepts. Thread-safe.

    A pickled (or copied) store carries its objects: the copy is independent, and what
    either side writes afterwards the other never sees.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[bytes] = []  # sorted UTF-8 keys
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._version = 0  # of the last write

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"objects": dict(self._objects), "version": self._version}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._objects = dict(state["objects"])
        self._keys = sorted(key.encode() for key in self._objects)
        self._version = state["version"]

    def _write(
        self,
        key: str,
        chunks: Chunks,
        *,
        persist: bool,
        if_none_match: bool,
        if_match: str | None,
        attributes: Attributes = DEFAULT_ATTRIBUTES,
    ) -> str:
        return self._store(key, b"".join(chunks), attributes, if_none_match, if_match)

    def _store(
        self, key: str, data: bytes, attributes: Attributes, if_none_match: bool, if_match: str | None
    ) -> str:
        with self._lock:
            current = self._objects.get(key)
            if if_none_match and current is not None:
                raise AlreadyExistsError(key)
            if if_match is not None:
                if current is None:
                    raise NotExistError(key)
                if current[1].etag != if_match:
                    raise PreconditionFailedError(key, if_match)
            self._version += 1
            info = ObjectInfo(
                key,
                len(data),
                datetime.now(UTC),
                f"m{self._version}",
                attributes.content_type,
                attributes.metadata,
            )
            if current is None:
                bisect.insort(self._keys, key.encode())
            self._objects[key] = (data, info)
            return info.etag

    def _entry(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise NotExistError(key) from None

    def _read(self, key: str, start: int, end: int | None) -> BinaryIO:
        return self._read_version(key, start, end, None)

    def _read_version(self, key: str, start: int, end: int | None, etag: str | None) -> BinaryIO:
        data, info = self._entry(key)
        if etag is not None and info.etag != etag:
            raise ObjectChangedError(key, etag)
        return cast(BinaryIO, io.BufferedReader(_BytesRange(key, data, *clamp(start, end, len(data)))))

    def _stat(self, key: str) -> ObjectInfo:
        return self._entry(key)[1]

    def _copy(self, src: str, dst: str) -> str:
        data, info = self._entry(src)  # one version: bytes and attributes together
        return self._store(dst, data, Attributes(str(info.content_type), info.metadata), False, None)

    def _delete(self, key: str) -> None:
        with self._lock:
            if self._objects.pop(key, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key.encode())]

    def _list(self, prefix: str, start_after: str, recursive: bool) -> Iterator[ObjectInfo | CommonPrefix]:
        cursor = ListCursor(start_after)
        infos = self._walk(prefix, cursor)
        return infos if recursive else fold_levels(prefix, infos, cursor)

    def _walk(self, prefix: str, cursor: ListCursor) -> Iterator[ObjectInfo]:
        # Every key below ``position`` (and ``position`` itself unless ``inclusive``) is passed.
        inclusive = prefix > cursor.start_after
        position = (prefix if inclusive else cursor.start_after).encode()
        while True:
            with self._lock:
                find = bisect.bisect_left if inclusive else bisect.bisect_right
                index = find(self._keys, position)
                if index == len(self._keys):
                    return
                key = self._keys[index].decode()
                info = self._objects[key][1]
            if not key.startswith(prefix):
                return
            position, inclusive = key.encode(), False
            if cursor.skip_prefix is not None and key.startswith(cursor.skip_prefix):
                # jump past every key of the folded level
                position = cursor.skip_prefix.encode() + b"\xff"
                continue
            yield info


class _BytesRange(RangeReader):
    """A range of one version of an object's bytes (never copied)."""

    def __init__(self, key: str, data: bytes, start: int, end: int) -> None:
        super().__init__(key, start, end)
        self._data = memoryview(data)

    def _read_at(self, offset: int, count: int) -> bytes:
        return bytes(self._data[offset : offset + count])
