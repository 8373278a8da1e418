"""Crash and concurrency claims, tested with real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from objstore import NotExistError, Storage
from objstore.posix import PosixStorage
from objstore.posixflat import PosixFlatStorage
from tests.conftest import StorageFactory
from tests.storage_worker import check_version, storage_spec, version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_writer(storage: Storage, key: str, writer: int, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.storage_worker",
            storage_spec(storage),
            "churn",
            key,
            str(writer),
            str(count),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kill_after", [0.0, 0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize("backend", ["posix", "posixflat"])
def test_writer_killed_mid_write_leaves_a_whole_version(
    make_storage: StorageFactory, kill_after: float
) -> None:
    storage = make_storage()
    storage.write("k", b"".join(version(999, 0)))
    writer = start_writer(storage, "k", 1, 0)
    assert writer.stdout is not None and writer.stdout.readline() == "WRITING\n"
    time.sleep(kill_after + random.uniform(0, 0.01))
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()

    assert check_version(storage.read_bytes("k"))[0] in (999, 1)
    assert [info.key for info in storage.list()] == ["k"]
    assert isinstance(storage, (PosixStorage, PosixFlatStorage))
    tmp = os.path.join(storage.root, "tmp")
    assert len(os.listdir(tmp)) <= 1  # at most the killed write's part
    reopened = type(storage)(storage.root, tmp_grace=0)
    assert os.listdir(tmp) == []
    assert check_version(reopened.read_bytes("k"))[0] in (999, 1)


def test_concurrent_writers_leave_one_whole_version(make_storage: StorageFactory) -> None:
    storage = make_storage()
    writers = [start_writer(storage, "k", number, 8) for number in range(4)]
    reads = 0
    deadline = time.monotonic() + 120
    while any(writer.poll() is None for writer in writers) and time.monotonic() < deadline:
        try:
            check_version(storage.read_bytes("k"))  # a reader never sees a torn object
            reads += 1
        except NotExistError:
            pass
    for writer in writers:
        assert writer.wait(timeout=60) == 0
        assert writer.stdout is not None
        assert writer.stdout.read().endswith("DONE\n")
        writer.stdout.close()
    writer_id, number = check_version(storage.read_bytes("k"))
    assert writer_id in range(4) and number == 7
    assert [info.key for info in storage.list()] == ["k"]
    print(f"{reads} whole reads during the writes")
