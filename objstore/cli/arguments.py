"""The values of ``objstore``'s options, parsed from their text (argparse ``type=``)."""

from __future__ import annotations

import argparse
import re

import attrs

#: S3's limits on a presigned URL's life, in seconds.
MAX_EXPIRY = 7 * 24 * 3600


@attrs.frozen
class ByteRange:
    """An HTTP-style byte range: ``first-last`` (inclusive), ``first-`` (to the end), or
    ``-count`` (the last ``count`` bytes: ``first`` None, ``last`` the count)."""

    first: int | None
    last: int | None

    def bounds(self, size: int) -> tuple[int, int]:
        """The ``[start, end)`` it names in an object of ``size`` bytes, cut to the object."""
        if self.first is None:
            assert self.last is not None
            return max(size - self.last, 0), size
        end = size if self.last is None else min(self.last + 1, size)
        return min(self.first, size), max(end, min(self.first, size))


def byte_range(text: str) -> ByteRange:
    match = re.fullmatch(r"([0-9]*)-([0-9]*)", text)
    if match is None or match.group(1) == match.group(2) == "":
        raise argparse.ArgumentTypeError(f"a range is FIRST-LAST, FIRST- or -COUNT (bytes), not {text!r}")
    first = int(match.group(1)) if match.group(1) else None
    last = int(match.group(2)) if match.group(2) else None
    if first is not None and last is not None and last < first:
        raise argparse.ArgumentTypeError(f"the range {text!r} ends before it starts")
    return ByteRange(first, last)


def positive_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return int(text)


def expiry(text: str) -> int:
    seconds = positive_int(text)
    if seconds > MAX_EXPIRY:
        raise argparse.ArgumentTypeError(f"at most {MAX_EXPIRY} seconds (7 days), not {text}")
    return seconds
