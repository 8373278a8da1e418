"""What a spawned process does with a store it received pickled (see tests/test_pickle.py)."""

from __future__ import annotations

import os
import traceback
from multiprocessing.connection import Connection
from typing import Any

from objstore import Storage
from objstore.fsspec import ObjstoreFileSystem

#: What the parent writes before it pickles the store, and what the child writes.
PARENT_KEY, PARENT_DATA = "parent/object", b"from the parent"
CHILD_DATA = {"child/by-store": b"from the child's store", "child/by-fsspec": b"from the child's fsspec"}


def use(storage: Storage, fs: ObjstoreFileSystem, answers: Connection) -> None:
    """Read what the parent wrote, write through the store and through fsspec, and report."""
    try:
        report: dict[str, Any] = {
            "pid": os.getpid(),
            "one store": fs.storage is storage,
            "read": storage.read_bytes(PARENT_KEY),
            "read through fsspec": fs.cat(PARENT_KEY),
        }
        storage.write("child/by-store", CHILD_DATA["child/by-store"])
        with fs.open("child/by-fsspec", "wb") as file:
            file.write(CHILD_DATA["child/by-fsspec"])
        report["keys"] = list(storage.list_keys())
        answers.send(report)
    except BaseException:
        answers.send(traceback.format_exc())
        raise
    finally:
        storage.close()
        answers.close()
