"""Crash and concurrency claims, tested with real processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from objstore import KeyConflictError, NotExistError, Storage
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


@pytest.mark.parametrize("backend", ["posix", "posixflat", "s3"])
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


SWAPPER = """
import os, sys, time
data, outside = sys.argv[1], sys.argv[2]
end = time.monotonic() + float(sys.argv[3])
swaps = 0
while time.monotonic() < end:
    try:
        os.rename(os.path.join(data, "x"), os.path.join(data, "moved"))
    except OSError:
        pass
    try:
        os.symlink(outside, os.path.join(data, "x"))
    except FileExistsError:  # the store made "x" again meanwhile
        continue
    time.sleep(0.0005)
    try:
        os.unlink(os.path.join(data, "x"))
    except OSError:
        pass
    try:
        os.rename(os.path.join(data, "moved"), os.path.join(data, "x"))
    except OSError:
        pass
    swaps += 1
print(swaps)
"""


@pytest.mark.parametrize("backend", ["posix"])
def test_symlink_swapped_in_mid_operation_never_reaches_outside(
    make_storage: StorageFactory, tmp_path: os.PathLike[str]
) -> None:
    storage = make_storage()
    assert isinstance(storage, PosixStorage)
    outside = os.path.join(tmp_path, "outside")
    os.makedirs(os.path.join(outside, "k"))
    with open(os.path.join(outside, "secret"), "wb") as file:
        file.write(b"secret")
    storage.write("x/secret", b"inside")
    swapper = subprocess.Popen(
        [sys.executable, "-c", SWAPPER, os.path.join(storage.root, "data"), outside, "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    operations = 0
    while swapper.poll() is None:
        for call in (
            lambda: storage.write("x/secret", b"overwritten"),
            lambda: storage.write("x/k/new", b"new"),
            lambda: storage.read_bytes("x/secret"),
            lambda: list(storage.list("x/")),
            lambda: storage.delete("x/secret"),
            lambda: storage.delete("x/k/new"),
        ):
            with contextlib.suppress(KeyConflictError, NotExistError):
                call()
            operations += 1
    assert swapper.stdout is not None
    swaps = int(swapper.stdout.read())
    swapper.stdout.close()
    assert swaps > 10 and operations > 10
    assert sorted(os.listdir(outside)) == ["k", "secret"]
    assert os.listdir(os.path.join(outside, "k")) == []
    with open(os.path.join(outside, "secret"), "rb") as file:
        assert file.read() == b"secret"
    print(f"{operations} operations during {swaps} symlink swaps")


@pytest.mark.parametrize("backend", ["posix", "posixflat"])
def test_writers_and_deleters_share_folders(make_storage: StorageFactory) -> None:
    """Deleting prunes emptied folders while other processes write into them: nothing fails."""
    storage = make_storage()
    spec = storage_spec(storage)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.storage_worker", spec, "folders", "shared", str(n), "2"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    rounds = 0
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        rounds += int(out.split()[-1])
    assert list(storage.list()) == []
    assert isinstance(storage, (PosixStorage, PosixFlatStorage))
    assert os.listdir(os.path.join(storage.root, "data")) == []
    print(f"{rounds} rounds of 3 writes and 3 deletes in shared folders")


@pytest.mark.parametrize("backend", [PosixStorage, PosixFlatStorage])
def test_fork_while_a_thread_holds_a_key_lock(
    tmp_path: os.PathLike[str], backend: type[PosixStorage] | type[PosixFlatStorage]
) -> None:
    """A child forked while another thread holds a key's lock can write that key."""
    storage = backend(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        stripe = storage._lock("k")
        holding.set()
        release.wait(30)
        storage._unlock(stripe)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: exits 0 once its write is done
        code = 1
        try:
            storage.write("k", b"child")
            code = 0
        finally:
            os._exit(code)
    release.set()  # the parent's thread lets go of the byte-range lock the child waits for
    holder.join()
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the lock held by a thread of its parent")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert storage.read_bytes("k") == b"child"
