"""Key rules: the ones every backend shares and the stricter posix ones."""

from __future__ import annotations

from .errors import InvalidKeyError

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255


def check_key(key: object) -> str:
    """Return ``key`` if every backend can store it, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(repr(key), f"a key is a str, not {type(key).__name__}")
    if not key:
        raise InvalidKeyError(key, "a key is not empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(key, "a key is valid unicode (no lone surrogate)") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(key, f"a key has at most {MAX_KEY_BYTES} UTF-8 bytes, not {size}")
    if "\0" in key:
        raise InvalidKeyError(key, "a key has no NUL character")
    return key


def check_posix_key(key: object) -> str:
    """Return ``key`` if it names a file path under a root, else raise :class:`InvalidKeyError`."""
    if (  # the common case, checked fast
        type(key) is str
        and key.isascii()
        and 0 < len(key) <= MAX_SEGMENT_BYTES
        and "\0" not in key
        and key[0] != "/"
        and key[-1] != "/"
        and "//" not in key
        and "/." not in key
        and key[0] != "."
    ):
        return key
    key = check_key(key)
    if key.startswith("/"):
        raise InvalidKeyError(key, 'a posix key does not start with "/"')
    if key.endswith("/"):
        raise InvalidKeyError(key, 'a posix key does not end with "/"')
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(key, f'a posix key has no {segment!r} segment (empty, "." or "..")')
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKeyError(key, f"a posix key segment has at most {MAX_SEGMENT_BYTES} UTF-8 bytes")
    return key


def check_prefix(prefix: object, name: str = "prefix") -> str:
    """Return a listing prefix or start_after value, which may be empty."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(repr(prefix), f"{name} is a str, not {type(prefix).__name__}")
    if prefix:
        check_key(prefix)
    return prefix
