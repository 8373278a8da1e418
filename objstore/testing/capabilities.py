"""What a backend can do, so that the conformance suite checks exactly that."""

from __future__ import annotations

import attrs

from ..errors import InvalidKeyError
from ..storage import Storage


def _accepts(storage: Storage, key: str) -> bool:
    try:
        storage.check_key(key)
    except InvalidKeyError:
        return False
    return True


@attrs.frozen
class Capabilities:
    """The capability flags that steer the conformance suite.

    - ``tree``: keys are paths in a folder tree, so ``a`` and ``a/b`` cannot both exist:
      the second write raises ``KeyConflictError`` and changes nothing (posix). Without
      it, the suite requires a flat namespace where they coexist.
    - ``path_keys``: keys follow the posix rules (no empty, "." or ".." segment, no
      leading or trailing "/"); the suite requires other keys to be refused with
      ``InvalidKeyError``. Without it, the suite writes such keys and requires them kept.
    - ``dot_segments``: with flat keys, keys may have "." and ".." segments (``a/./b``),
      kept as they are. Without it, the suite requires them refused with
      ``InvalidKeyError`` (on S3, HTTP clients rewrite such paths).
    - ``conditional_writes``: ``if_none_match`` and ``if_match`` are honoured atomically.
      Without it, the suite requires them refused with ``InvalidArgumentError`` and skips
      the create-only and compare-and-swap checks.
    - ``metadata``: writes keep a content type and user metadata, and ``stat`` tells
      them. Without it, the suite requires them refused with ``UnsupportedError`` and
      infos to carry None for them.
    - ``listed_metadata``: ``list`` infos carry them too. Without it, they carry None.
    """

    tree: bool = False
    path_keys: bool = False
    dot_segments: bool = True
    conditional_writes: bool = True
    metadata: bool = True
    listed_metadata: bool = True

    @classmethod
    def of(cls, storage: Storage, *, tree: bool = False) -> Capabilities:
        """What ``storage`` declares: conditional writes from its flag, the key rules from its key check.

        Whether keys form a tree cannot be seen without writing, so it is given.
        """
        return cls(
            tree=tree,
            path_keys=not _accepts(storage, "a//b"),
            dot_segments=_accepts(storage, "a/./b"),
            conditional_writes=storage.supports_conditional_writes,
            metadata=storage.supports_metadata,
            listed_metadata=storage.supports_metadata and storage.lists_metadata,
        )

    def skipped(self) -> list[str]:
        """The checks that these capabilities turn off, as sentences."""
        skipped = []
        if not self.conditional_writes:
            skipped.append(
                "create-only writes (if_none_match) and compare-and-swap (if_match): "
                "supports_conditional_writes is False, so only their refusal is checked"
            )
        if not self.metadata:
            skipped.append(
                "content types and metadata: supports_metadata is False, so only their refusal is checked"
            )
        return skipped
