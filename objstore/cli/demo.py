"""``objstore demo [PATH]``: write, list and read back objects in a local posix store."""

from __future__ import annotations

import sys

from ..config import from_config


def demo(path: str) -> None:
    """Show the storage interface on a posix store at ``path``."""
    storage = from_config({"type": "posix", "path": path})
    print(f"posix store at {storage.root}")  # type: ignore[attr-defined]
    for key, text in [
        ("logs/task-1/setup.log", "cloning repository\n"),
        ("logs/task-1/steps/0.log", "running tests\n42 passed\n"),
        ("logs/task-2/setup.log", "restoring cache\n"),
        ("README", "written by objstore's demo\n"),
    ]:
        etag = storage.write(key, text.encode())
        print(f"wrote {key!r} ({len(text)} bytes, etag {etag})")
    print("one level below 'logs/task-1/':")
    for entry in storage.list("logs/task-1/", recursive=False):
        print(f"  {entry.key}")
    print("everything, in key order:")
    for entry in storage.list():
        print(f"  {entry.key}")
    print("read back 'logs/task-1/steps/0.log':")
    with storage.read("logs/task-1/steps/0.log") as stream:
        sys.stdout.write("  " + stream.read().decode().replace("\n", "\n  ").rstrip() + "\n")
    storage.close()
