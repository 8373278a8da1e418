"""What an object carries besides its bytes: a content type and user metadata.

The rules are S3's, checked before anything is sent or written, so that every backend
keeps the same attributes:

- metadata keys are lowercase ASCII letters, digits, "-" and "." (S3 lowercases names,
  and servers and proxies drop header names with "_"); keys starting with "objstore-"
  are objstore's own;
- values are printable ASCII without spaces at either end (what an HTTP header keeps);
- keys and values together take at most 2 KiB, in at most 128 entries;
- a content type is printable ASCII of at most 256 characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from .errors import InvalidArgumentError

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 256
MAX_METADATA_BYTES = 2048
MAX_METADATA_ENTRIES = 128
RESERVED_PREFIX = "objstore-"

_METADATA_KEY = re.compile(r"[a-z0-9.-]+")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")


class Metadata(Mapping[str, str]):
    """User metadata of an object: an immutable mapping of str to str."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._items == dict(other)

    def __repr__(self) -> str:
        return f"Metadata({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Metadata, (self._items,)


def _metadata(value: Mapping[str, str] | None) -> Metadata:
    return value if isinstance(value, Metadata) else Metadata(value)


@attrs.frozen(slots=True)
class Attributes:
    """The content type and user metadata one write stores with the object's bytes."""

    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: Metadata = attrs.field(factory=Metadata, converter=_metadata)

    @property
    def is_default(self) -> bool:
        """Whether these are the attributes of a write that gave none."""
        return self.content_type == DEFAULT_CONTENT_TYPE and not self.metadata

    @classmethod
    def checked(cls, content_type: object, metadata: object) -> Attributes:
        """The attributes of ``write(content_type=..., metadata=...)``; ``InvalidArgumentError``
        naming the offending value if S3's rules refuse them (None gives the default)."""
        if content_type is None and metadata is None:
            return DEFAULT_ATTRIBUTES
        return cls(
            DEFAULT_CONTENT_TYPE if content_type is None else _checked_content_type(content_type),
            Metadata() if metadata is None else _checked_metadata(metadata),
        )


DEFAULT_ATTRIBUTES = Attributes()


def _checked_content_type(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_CONTENT_TYPE_LENGTH
        or not _HEADER_VALUE.fullmatch(value)
    ):
        raise InvalidArgumentError(
            f"content_type is printable ASCII of 1 to {MAX_CONTENT_TYPE_LENGTH} characters, "
            f"without spaces at either end, not {value!r:.80}"
        )
    return value


def _checked_metadata(value: object) -> Metadata:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"metadata is a mapping of str to str, not {type(value).__name__}")
    if len(value) > MAX_METADATA_ENTRIES:
        raise InvalidArgumentError(f"metadata has {len(value)} entries; at most {MAX_METADATA_ENTRIES} fit")
    size = 0
    for key, item in value.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise InvalidArgumentError(
                f'metadata key {key!r:.80} is not lowercase ASCII letters, digits, "-" and "."'
            )
        if key.startswith(RESERVED_PREFIX):
            raise InvalidArgumentError(
                f"metadata key {key!r:.80} starts with {RESERVED_PREFIX!r}, which is objstore's own"
            )
        if not isinstance(item, str) or not _HEADER_VALUE.fullmatch(item):
            raise InvalidArgumentError(
                f"metadata value {item!r:.80} of {key!r} is not printable ASCII without spaces at either end"
            )
        size += len(key) + len(item)
    if size > MAX_METADATA_BYTES:
        raise InvalidArgumentError(f"metadata takes {size} bytes; at most {MAX_METADATA_BYTES} fit")
    return Metadata(value)
