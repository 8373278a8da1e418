"""What a long command shows while it works: a bar of bytes (rate, ETA) on a terminal, and a
line per object done."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import BinaryIO

from ..errors import MissingExtraError

try:
    from tqdm import tqdm
except ModuleNotFoundError as exc:
    raise MissingExtraError("the objstore command line", "cli", exc.name or "tqdm") from exc


class Progress:
    """A bar on stderr, shown only if stderr is a terminal and not ``quiet``; lines of what
    was done on stdout, unless ``quiet``. Safe to use from several threads."""

    def __init__(self, *, quiet: bool, total: int | None = None) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()
        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
            leave=False,
        )

    @property
    def shown(self) -> bool:
        """Whether the bar is on the terminal."""
        return not self._bar.disable

    def advance(self, count: int) -> None:
        """Count ``count`` bytes moved."""
        if count:  # negative: taken back
            with self._lock:
                self._bar.update(count)

    def done(self, line: str) -> None:
        """Say that one object was dealt with (on stdout, above the bar)."""
        if not self.quiet:
            with self._lock:
                if self.shown:
                    self._bar.write(line, file=sys.stdout)
                else:
                    print(line, flush=True)

    def failed(self, line: str) -> None:
        """Say that one object failed (on stderr, above the bar), even if ``quiet``."""
        with self._lock:
            self._bar.write(line, file=sys.stderr)

    def tally(self) -> Tally:
        """A count of the bytes of one attempt at a copy, which a failed attempt takes back."""
        return Tally(self)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class Tally:
    """The bytes one attempt at a copy moved, counted on a :class:`Progress` as they go."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.moved = 0

    def advance(self, count: int) -> None:
        self.moved += count
        self._progress.advance(count)

    def take_back(self) -> None:
        """Uncount what this attempt moved: it failed, and another starts over."""
        self._progress.advance(-self.moved)
        self.moved = 0

    def reader(self, stream: BinaryIO) -> BinaryIO:
        """``stream``, counting the bytes read from it."""
        return _CountingReader(stream, self)  # type: ignore[return-value]


class _CountingReader:
    """The ``read`` of a binary stream, counted on a tally."""

    def __init__(self, stream: BinaryIO, tally: Tally) -> None:
        self._stream = stream
        self._tally = tally

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._tally.advance(len(chunk))
        return chunk
