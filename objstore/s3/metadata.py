"""An object's content type and user metadata as S3 headers, both ways."""

from __future__ import annotations

from collections.abc import Mapping

from ..attributes import DEFAULT_CONTENT_TYPE, RESERVED_PREFIX, Attributes, Metadata

META_PREFIX = "x-amz-meta-"
_OWN = META_PREFIX + RESERVED_PREFIX


def request_headers(attributes: Attributes) -> dict[str, str]:
    """The headers that store ``attributes`` with a PUT or a multipart upload's create."""
    headers = {"Content-Type": attributes.content_type}
    for key, value in attributes.metadata.items():
        headers[META_PREFIX + key] = value
    return headers


def response_attributes(headers: Mapping[str, str]) -> Attributes:
    """The attributes an object's HEAD or GET answer shows (objstore's own metadata left out)."""
    metadata = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(META_PREFIX) and not lowered.startswith(_OWN):
            metadata[lowered[len(META_PREFIX) :]] = value
    return Attributes(headers.get("Content-Type") or DEFAULT_CONTENT_TYPE, Metadata(metadata))
