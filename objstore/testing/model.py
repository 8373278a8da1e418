"""A simple in-memory model of the storage semantics that every backend must match."""

from __future__ import annotations

import attrs

from ..attributes import Attributes


@attrs.define
class StoreModel:
    """Objects as a dict; ``tree`` models posix, where ``a`` and ``a/b`` cannot coexist."""

    tree: bool
    objects: dict[str, bytes] = attrs.field(factory=dict)
    etags: dict[str, str] = attrs.field(factory=dict)
    attributes: dict[str, Attributes] = attrs.field(factory=dict)

    def remove(self, key: str) -> None:
        """Forget the object ``key``, if any."""
        self.objects.pop(key, None)
        self.etags.pop(key, None)
        self.attributes.pop(key, None)

    def conflicts(self, key: str) -> bool:
        """Whether writing ``key`` collides with the posix tree."""
        if not self.tree:
            return False
        if any(other.startswith(key + "/") for other in self.objects):
            return True
        parts = key.split("/")
        return any("/".join(parts[:n]) in self.objects for n in range(1, len(parts)))

    def listing(self, prefix: str, start_after: str, recursive: bool) -> list[tuple[str, bool]]:
        """(key, is common prefix) of what ``list`` yields, in order."""
        entries: set[tuple[str, bool]] = set()
        for key in self.objects:
            if not key.startswith(prefix):
                continue
            slash = key.find("/", len(prefix))
            if recursive or slash < 0:
                entries.add((key, False))
            else:
                entries.add((key[: slash + 1], True))
        return sorted(
            (entry for entry in entries if entry[0] > start_after),
            key=lambda entry: entry[0].encode("utf-8"),
        )
