"""The folder backends keep their promises under faults: many store objects on one root,
forked children, links planted in the root, broken temporaries, killed writers.

Run with ``pytest -s`` to see the figures each test prints.
"""

from __future__ import annotations

import collections
import gc
import logging
import multiprocessing
import os
import random
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from objstore import (
    CleanupResult,
    NotExistError,
    ObjstoreError,
    PreconditionFailedError,
    StorageIOError,
    _filetree,
)
from objstore._filetree import FileTreeStorage
from objstore.posix import PosixStorage
from objstore.posixflat import PosixFlatStorage
from tests import storage_worker
from tests.storage_worker import deep_data, storage_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Backend = type[PosixStorage] | type[PosixFlatStorage]
BACKENDS = pytest.mark.parametrize("backend", [PosixStorage, PosixFlatStorage], ids=["posix", "posixflat"])
KEYS = 300
HOUR = 3600.0


@pytest.fixture
def stores() -> Iterator[list[FileTreeStorage]]:
    """The stores a test opens, closed when it ends."""
    opened: list[FileTreeStorage] = []
    yield opened
    for store in opened:
        store.close()


def run_threads(targets: list[Callable[[], None]], timeout: float = 30) -> None:
    """Run each target in a thread, all started at once; fail if one is still running after ``timeout``."""
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads still running"


def race_creates(store: FileTreeStorage, tag: str, start: threading.Barrier) -> list[str]:
    """Try a create-only write of every race key, each started with the other racers; the keys
    this caller created."""
    report: list[str] = []
    storage_worker.race_creates(store, "race", KEYS, report, start=start, tag=tag)
    return [line.split()[1] for line in report]


def check_one_winner_per_key(store: FileTreeStorage, wins: dict[str, list[str]]) -> None:
    """Every race key has exactly one winner, whose tag it holds."""
    per_key: dict[str, list[str]] = collections.defaultdict(list)
    for tag, keys in wins.items():
        for key in keys:
            per_key[key].append(tag)
    total = sum(len(tags) for tags in per_key.values())
    print(f"{KEYS} keys raced by {len(wins)} writers: {total} winners")
    assert {key: len(tags) for key, tags in per_key.items() if len(tags) != 1} == {}
    assert len(per_key) == KEYS
    for key, (tag,) in per_key.items():
        assert store.read_bytes(key) == tag.encode()


def increment(store: FileTreeStorage, times: int, conflicts: list[int]) -> None:
    """Add ``times`` to the counter by compare-and-swap."""
    done = 0
    while done < times:
        etag = store.stat("counter").etag
        value = int(store.read_bytes("counter"))
        try:
            store.write("counter", str(value + 1).encode(), if_match=etag)
        except PreconditionFailedError:
            conflicts.append(1)
            continue
        done += 1


# -- 1. locks: every store object excludes every other ---------------------------------------


@BACKENDS
def test_create_only_races_between_two_store_objects(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores += [backend(tmp_path), backend(tmp_path)]
    tags = [f"store{n % 2}-thread{n}" for n in range(4)]
    start = threading.Barrier(len(tags))
    wins: dict[str, list[str]] = {}

    def racer(tag: str, store: FileTreeStorage) -> Callable[[], None]:
        return lambda: wins.__setitem__(tag, race_creates(store, tag, start))

    run_threads([racer(tag, stores[n % 2]) for n, tag in enumerate(tags)])
    check_one_winner_per_key(stores[0], wins)


@BACKENDS
def test_compare_and_swap_counter_over_two_store_objects(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores += [backend(tmp_path), backend(tmp_path)]
    stores[0].write("counter", b"0", if_none_match=True)
    threads, times = 4, 150
    conflicts: list[int] = []
    run_threads([lambda n=n: increment(stores[n % 2], times, conflicts) for n in range(threads)])
    final = int(stores[1].read_bytes("counter"))
    print(f"{threads * times} increments over 2 store objects: counter at {final}, {len(conflicts)} refused")
    assert final == threads * times


def start_workers(storage: FileTreeStorage, mode: str, key: str, objects: list[int], count: int) -> list[str]:
    """Run one worker process per entry of ``objects`` (its number of store objects), started
    together; their outputs."""
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage_worker",
                storage_spec(storage),
                mode,
                key,
                str(n),
                str(count),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in objects
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "READY\n"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    assert [worker.returncode for worker in workers] == [0] * len(workers)
    assert all(output.endswith("DONE\n") for output in outputs)
    return outputs


PROCESS_OBJECTS = [1, 1, 2, 2]  # store objects in each process: one, or two on threads


@BACKENDS
def test_create_only_races_between_processes(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))
    outputs = start_workers(stores[0], "race", "race", PROCESS_OBJECTS, KEYS)
    wins: dict[str, list[str]] = collections.defaultdict(list)
    for output in outputs:
        for line in output.splitlines()[:-1]:
            _, key, tag = line.split()
            wins[tag].append(key)
    wins.update({f"idle-{n}": [] for n in range(sum(PROCESS_OBJECTS) - len(wins))})
    check_one_winner_per_key(stores[0], wins)


@BACKENDS
def test_compare_and_swap_counter_over_processes(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))
    stores[0].write("counter", b"0", if_none_match=True)
    times = 50
    outputs = start_workers(stores[0], "count", "counter", PROCESS_OBJECTS, times)
    reports = [line.split() for output in outputs for line in output.splitlines()[:-1]]
    increments = sum(int(report[1]) for report in reports)
    final = int(stores[0].read_bytes("counter"))
    print(
        f"{increments} increments by {len(reports)} store objects in {len(PROCESS_OBJECTS)} processes: "
        f"counter at {final}, {sum(int(report[2]) for report in reports)} refused"
    )
    assert increments == sum(PROCESS_OBJECTS) * times
    assert final == increments


def fork(child: Callable[[], str]) -> Callable[[], str]:
    """Fork a child process that runs ``child`` and exits; a function that waits for it (30 s
    at most) and returns what ``child`` returned."""
    out_read, out_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(out_read)
            output, code = child(), 0
        except BaseException:
            output = traceback.format_exc()
        finally:
            os.write(out_write, output.encode())
            os._exit(code)
    os.close(out_write)

    def wait() -> str:
        deadline = time.monotonic() + 30
        output = b""
        while time.monotonic() < deadline and select.select([out_read], [], [], 0.5)[0]:
            chunk = os.read(out_read, 1 << 16)
            if not chunk:
                break
            output += chunk
        os.close(out_read)
        done, status = os.waitpid(pid, os.WNOHANG)
        while done == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
            done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        assert os.waitstatus_to_exitcode(status) == 0, output
        return output.decode()

    return wait


def race_in_two_threads(store: FileTreeStorage, name: str, start: threading.Barrier) -> dict[str, list[str]]:
    wins: dict[str, list[str]] = {}
    tags = [f"{name}-thread{n}" for n in range(2)]
    run_threads([lambda tag=tag: wins.__setitem__(tag, race_creates(store, tag, start)) for tag in tags])
    return wins


@BACKENDS
def test_parent_and_forked_child_exclude_each_other(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    """A forked child gets a lock of its own: it and its parent, sharing one store object, race
    on the same keys and each key has one winner."""
    stores.append(backend(tmp_path))
    start = multiprocessing.get_context("fork").Barrier(4)  # two threads in each process, per key

    def child() -> str:
        wins = race_in_two_threads(stores[0], "child", start)
        return "\n".join(f"{tag} {key}" for tag, keys in wins.items() for key in keys)

    wait = fork(child)
    wins = race_in_two_threads(stores[0], "parent", start)
    wins.update({"child-thread0": [], "child-thread1": []})
    for line in wait().splitlines():
        tag, key = line.split()
        wins[tag].append(key)
    check_one_winner_per_key(stores[0], wins)


HOLD = 0.3  # seconds a key lock is held while another store object tries the key


@BACKENDS
def test_a_key_lock_of_one_store_object_holds_off_another(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores += [backend(tmp_path), backend(tmp_path)]
    stripe = stores[0]._lock("k")
    try:
        writer = threading.Thread(target=lambda: stores[1].write("k", b"second", if_none_match=True))
        writer.start()
        writer.join(HOLD)
        assert writer.is_alive() and not stores[0].exists("k")  # waiting for the first object's lock
    finally:
        stores[0]._unlock(stripe)
    writer.join(10)
    assert not writer.is_alive() and stores[0].read_bytes("k") == b"second"


@BACKENDS
def test_a_forked_child_waits_for_its_parents_key_lock(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))
    stripe = stores[0]._lock("k")
    try:
        wait = fork(lambda: stores[0].write("k", b"child", if_none_match=True))
        time.sleep(HOLD)
        assert not stores[0].exists("k")  # the child waits for its parent's lock
    finally:
        stores[0]._unlock(stripe)
    assert wait() == stores[0].stat("k").etag
    assert stores[0].read_bytes("k") == b"child"


@BACKENDS
def test_a_forked_child_that_cannot_reopen_the_lock_file_refuses_to_write(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    if _filetree._OFD_LOCKS is None:
        pytest.skip("with lockf locks a child needs no lock file of its own")
    stores.append(backend(tmp_path))
    (tmp_path / "new-locks").write_bytes(b"")
    os.replace(tmp_path / "new-locks", tmp_path / "locks")  # the parent's lock file is gone

    def child() -> str:
        try:
            stores[0].write("k", b"child")
        except StorageIOError as error:
            return str(error)
        return "written"

    refused = fork(child)()
    print(f"the child: {refused}")
    assert "forked" in refused and not stores[0].exists("k")


def test_flock_layout_is_linux_struct_flock() -> None:
    """The packed ``struct flock``: short l_type, short l_whence, off_t l_start, off_t l_len,
    pid_t l_pid, padded to the alignment of off_t."""
    if _filetree._OFD_LOCKS is None:
        pytest.skip("no open-file-description locks on this platform")
    assert _filetree._FLOCK.size == (32 if sys.maxsize > 2**32 else 24)
    assert _filetree._FLOCK.unpack(_filetree._FLOCK.pack(1, 0, 7, 1, 0)) == (1, 0, 7, 1, 0)


@BACKENDS
def test_without_open_file_description_locks_one_store_object_still_works(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lockf fallback (for platforms without OFD locks) still excludes the threads of one store object."""
    monkeypatch.setattr(_filetree, "_OFD_LOCKS", None)
    stores.append(backend(tmp_path))
    assert stores[0]._ofd_locks is None
    stores[0].write("counter", b"0", if_none_match=True)
    conflicts: list[int] = []
    run_threads([lambda: increment(stores[0], 100, conflicts) for _ in range(3)])
    assert int(stores[0].read_bytes("counter")) == 300


@BACKENDS
def test_threads_list_the_top_of_one_store_object_at_once(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    """Each listing reads the data folder at a position of its own."""
    stores.append(backend(tmp_path))
    keys = [f"k{number:05d}" for number in range(3000)]
    for key in keys:
        stores[0].write(key, b"")
    wrong: list[int] = []

    def lister() -> None:
        for _ in range(10):
            if list(stores[0].list_keys()) != keys:
                wrong.append(1)

    run_threads([lister] * 4)
    print(f"{len(wrong)} of 40 listings during 3 other listings were wrong")
    assert wrong == []


# -- 2. nothing outside the root -------------------------------------------------------------


def open_fds() -> int:
    """How many files this process has open, once garbage (of other tests too) is collected."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def plant(path: Path, kind: str) -> None:
    """Make ``path`` a regular file, a folder or a FIFO."""
    if kind == "file":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@BACKENDS
@pytest.mark.parametrize("name", ["locks", "tmp", "data"])
def test_links_planted_in_the_root_are_refused(tmp_path: Path, backend: Backend, name: str) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    target = outside / name
    os.symlink(target, root / name)
    before = open_fds()
    for target_exists in (False, True):
        if target_exists:
            plant(target, "file" if name == "locks" else "folder")
            target.chmod(0o755)
        with pytest.raises(StorageIOError, match=re.escape(f"{root / name}")) as caught:
            backend(root)
        assert "link" in str(caught.value)
        assert isinstance(caught.value.__cause__, OSError)
        assert os.listdir(outside) == ([name] if target_exists else [])
    assert stat.S_IMODE(target.stat().st_mode) == 0o755  # not narrowed either
    assert not target.is_dir() or os.listdir(target) == []
    assert open_fds() == before


@BACKENDS
@pytest.mark.parametrize(
    ("name", "kind"), [("locks", "folder"), ("locks", "fifo"), ("tmp", "file"), ("data", "fifo")]
)
def test_entries_of_the_wrong_kind_in_the_root_are_refused(
    tmp_path: Path, backend: Backend, name: str, kind: str
) -> None:
    plant(tmp_path / name, kind)
    with pytest.raises(StorageIOError, match=re.escape(f"{tmp_path / name}")):
        backend(tmp_path)


@BACKENDS
def test_a_lock_file_with_another_link_is_refused(tmp_path: Path, backend: Backend) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (tmp_path / "elsewhere").write_bytes(b"")
    (tmp_path / "elsewhere").chmod(0o644)
    os.link(tmp_path / "elsewhere", root / "locks")
    with pytest.raises(StorageIOError, match=re.escape(f"{root / 'locks'}")):
        backend(root)
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o644


@BACKENDS
def test_lock_file_and_tmp_are_the_owners_alone(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    umask = os.umask(0)
    try:
        stores.append(backend(tmp_path / "new"))
    finally:
        os.umask(umask)
    modes = {name: oct(stat.S_IMODE((tmp_path / "new" / name).stat().st_mode)) for name in ("locks", "tmp")}
    print(f"modes of a new store (umask 0): {modes}")
    assert modes == {"locks": "0o600", "tmp": "0o700"}


@BACKENDS
def test_wider_lock_file_and_tmp_are_narrowed(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    (tmp_path / "locks").write_bytes(b"")
    (tmp_path / "locks").chmod(0o644)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o755)
    stores.append(backend(tmp_path))
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the files to another user")
def test_files_of_another_owner_keep_their_mode(tmp_path: Path, stores: list[FileTreeStorage]) -> None:
    (tmp_path / "locks").write_bytes(b"")
    (tmp_path / "locks").chmod(0o644)
    os.chown(tmp_path / "locks", 65534, 65534)
    stores.append(PosixStorage(tmp_path))
    assert stat.S_IMODE((tmp_path / "locks").stat().st_mode) == 0o644


# -- 3. opening: typed errors, no leaks, stale temporaries that stay -----------------------------


def make_old(path: Path, age: float = 2 * HOUR) -> None:
    then = time.time() - age
    os.utime(path, (then, then), follow_symlinks=False)


@BACKENDS
def test_a_stale_temporary_that_cannot_go_is_logged_and_skipped(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage], caplog: pytest.LogCaptureFixture
) -> None:
    stores.append(backend(tmp_path))
    stale_folder = tmp_path / "tmp" / "stale-folder"
    stale_folder.mkdir()
    (stale_folder / "inside").write_bytes(b"x")
    (tmp_path / "tmp" / "stale.tmp").write_bytes(b"x")
    make_old(stale_folder)
    make_old(tmp_path / "tmp" / "stale.tmp")
    with caplog.at_level(logging.WARNING, logger="objstore"):
        stores.append(backend(tmp_path))
    assert os.listdir(tmp_path / "tmp") == ["stale-folder"]
    assert any("stale-folder" in record.getMessage() for record in caplog.records)
    assert stores[-1].cleanup(0) == CleanupResult(temporaries=0, folders=0)


def test_a_stale_temporary_in_a_read_only_tmp_is_logged_and_skipped() -> None:
    """A real permission error: the store belongs to ``nobody`` (when the tests run as root) and
    its tmp is read-only; a forked child of that user opens it."""
    root = Path(tempfile.mkdtemp(prefix="objstore-test-"))  # where nobody can reach it
    try:
        check_read_only_tmp(root)
    finally:
        shutil.rmtree(root)


def check_read_only_tmp(root: Path) -> None:
    PosixStorage(root).close()
    (root / "tmp" / "stale.tmp").write_bytes(b"x")
    make_old(root / "tmp" / "stale.tmp")
    as_root = os.geteuid() == 0
    for path in [root, *root.rglob("*")] if as_root else []:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    (root / "tmp").chmod(0o500)

    def child() -> str:
        if as_root:
            os.setgid(65534)
            os.setuid(65534)
        handler = ListHandler()
        logging.getLogger("objstore").addHandler(handler)
        PosixStorage(root, tmp_grace=0).close()
        return "\n".join(handler.messages)

    try:
        logged = fork(child)()
    finally:
        (root / "tmp").chmod(0o700)
    print(f"logged: {logged}")
    assert "stale.tmp" in logged
    assert os.listdir(root / "tmp") == ["stale.tmp"]


class ListHandler(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


FAILURES = {
    "locks is a link": lambda root: os.symlink("/nonexistent", root / "locks"),
    "locks is a folder": lambda root: (root / "locks").mkdir(),
    "tmp is a link": lambda root: os.symlink("/", root / "tmp"),
    "data is a file": lambda root: (root / "data").write_bytes(b""),
    "the root is a file": lambda root: (root.rmdir(), root.write_bytes(b"")),
}


@BACKENDS
@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_opens_raise_typed_errors_and_leak_nothing(
    tmp_path: Path, backend: Backend, failure: str
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    FAILURES[failure](root)
    before = open_fds()
    for _ in range(50):
        with pytest.raises(ObjstoreError):
            backend(root)
    after = open_fds()
    print(f"{failure}: 50 failed opens, open fds {before} -> {after}")
    assert after == before


# -- 4. cleaning up after crashed writers -------------------------------------------------------


def empty_folders(data: Path) -> int:
    """The folders under ``data`` that hold no file, however deep (found without objstore)."""
    holds_file: dict[str, bool] = {}
    count = 0
    for folder, folders, files in os.walk(data, topdown=False):
        holds_file[folder] = bool(files) or any(holds_file[os.path.join(folder, name)] for name in folders)
        count += folder != str(data) and not holds_file[folder]
    return count


def leftovers(root: Path) -> tuple[int, int]:
    """(temporaries, empty folders) in the store at ``root``."""
    return len(os.listdir(root / "tmp")), empty_folders(root / "data")


def start_deep_writer(storage: FileTreeStorage, writer: int, count: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.storage_worker",
            storage_spec(storage),
            "deep",
            "deep",
            str(writer),
            str(count),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def crash_deep_writers(storage: FileTreeStorage, root: Path, writers: int = 3, rounds: int = 30) -> list[str]:
    """Kill writers of deep keys mid-write until both kinds of leftovers are there (at most
    ``rounds`` rounds); the keys the killed writers reported as kept."""
    kept: list[str] = []
    for round_ in range(rounds):
        procs = [start_deep_writer(storage, round_ * writers + n) for n in range(writers)]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline() == "WRITING\n"
            time.sleep(random.uniform(0.05, 0.2))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGKILL)
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            kept += [line.split()[1] for line in out.splitlines() if line.startswith("KEPT ")]
        temporaries, folders = leftovers(root)
        if temporaries and folders:
            print(f"{(round_ + 1) * writers} writers killed in {round_ + 1} rounds, {len(kept)} kept keys")
            return kept
    pytest.fail(f"no leftovers of both kinds after {rounds} rounds: {leftovers(root)}")


def check_objects_whole(store: FileTreeStorage, kept: list[str]) -> int:
    """Every kept key is there, and every object is whole; how many objects there are."""
    keys = list(store.list_keys())
    assert set(kept) <= set(keys)
    for key in keys:
        assert store.read_bytes(key) == deep_data(key)
    return len(keys)


@BACKENDS
def test_cleanup_after_writers_killed_mid_write(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))
    kept = crash_deep_writers(stores[0], tmp_path)
    found = leftovers(tmp_path)
    assert stores[0].cleanup() == CleanupResult(temporaries=0, folders=0)  # all of them are fresh
    assert leftovers(tmp_path) == found
    result = stores[0].cleanup(older_than=0)
    after = leftovers(tmp_path)
    print(f"leftovers (temporaries, empty folders): {found} before cleanup, {after} after; {result}")
    assert result == CleanupResult(temporaries=found[0], folders=found[1])
    assert leftovers(tmp_path) == (0, 0)
    objects = check_objects_whole(stores[0], kept)
    print(f"{objects} objects whole after the cleanup, {len(kept)} of them reported kept")


@BACKENDS
def test_opening_after_a_crash_removes_the_leftovers(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))
    kept = crash_deep_writers(stores[0], tmp_path)
    found = leftovers(tmp_path)
    stores.append(backend(tmp_path))  # the default grace: the leftovers are too fresh to go
    assert leftovers(tmp_path) == found
    stores.append(backend(tmp_path, tmp_grace=0))
    print(f"leftovers (temporaries, empty folders): {found} before opening, {leftovers(tmp_path)} after")
    assert leftovers(tmp_path) == (0, 0)
    check_objects_whole(stores[-1], kept)


@BACKENDS
def test_opening_a_store_without_stale_temporaries_does_not_sweep(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    (tmp_path / "data" / "empty" / "deeper").mkdir(parents=True)
    make_old(tmp_path / "data" / "empty" / "deeper")
    make_old(tmp_path / "data" / "empty")
    stores.append(backend(tmp_path, tmp_grace=0))
    assert empty_folders(tmp_path / "data") == 2
    assert stores[0].cleanup() == CleanupResult(temporaries=0, folders=2)
    assert os.listdir(tmp_path / "data") == []


def test_cleanup_keeps_files_links_and_fresh_folders(tmp_path: Path, stores: list[FileTreeStorage]) -> None:
    stores.append(PosixStorage(tmp_path / "store"))
    data = tmp_path / "store" / "data"
    outside = tmp_path / "outside"
    (outside / "empty").mkdir(parents=True)
    stores[0].write("full/a/b/obj", b"x")
    for folder in ("old/a/b", "fresh/a", "full/a/b/empty", "linked", "fifo/a"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    os.symlink(outside, data / "linked" / "outside")
    os.mkfifo(data / "fifo" / "a" / "pipe")
    old = [
        "old/a/b",
        "old/a",
        "old",
        "full/a/b/empty",
        "full/a/b",
        "full/a",
        "full",
        "linked",
        "fifo/a",
        "fifo",
    ]
    for folder in old:  # deepest first: making a child changed its parent's time
        make_old(data / folder)
    make_old(outside / "empty")
    removed = stores[0].cleanup()  # old/a/b, old/a, old, full/a/b/empty
    assert removed == CleanupResult(temporaries=0, folders=4)
    assert sorted(os.listdir(data)) == ["fifo", "fresh", "full", "linked"]
    assert os.listdir(data / "fresh") == ["a"]
    assert os.listdir(data / "full" / "a" / "b") == ["obj"]
    assert os.listdir(outside) == ["empty"]
    assert stores[0].cleanup(older_than=0) == CleanupResult(temporaries=0, folders=2)  # fresh/a, fresh
    assert stores[0].read_bytes("full/a/b/obj") == b"x"


def make_chain(top: Path, depth: int) -> int:
    """Make ``depth`` nested folders ``d`` in ``top`` (deeper than a path can name); the deepest, open."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    return fd


def test_cleanup_walks_deep_trees_without_recursion(tmp_path: Path, stores: list[FileTreeStorage]) -> None:
    stores.append(PosixStorage(tmp_path))
    depth = 3 * sys.getrecursionlimit()
    bottom = make_chain(tmp_path / "data", depth)
    try:
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=bottom))
        before = open_fds()
        over_a_file = stores[0].cleanup(older_than=0)
        assert os.listdir(tmp_path / "data") == ["d"]
        os.unlink("f", dir_fd=bottom)
        empty = stores[0].cleanup(older_than=0)
        print(f"a chain of {depth} folders: {over_a_file} over a file, {empty} once empty")
        assert over_a_file == CleanupResult(temporaries=0, folders=0)
        assert empty == CleanupResult(temporaries=0, folders=depth)
        assert open_fds() == before
        assert os.listdir(tmp_path / "data") == []
    finally:
        os.close(bottom)
        subprocess.run(["rm", "-rf", str(tmp_path / "data" / "d")], check=True)  # no recursion limit


@BACKENDS
def test_a_write_whose_new_folders_are_swept_makes_them_again(tmp_path: Path, backend: Backend) -> None:
    """A sweep between making a key's folders and renaming its file into them: the write retries."""

    class Swept(backend):  # type: ignore[valid-type,misc]
        removed: ClassVar[list[int]] = []

        def _open_dirs(self, key: str, names: list[str], *, create: bool) -> list[int]:
            fds = super()._open_dirs(key, names, create=create)
            if create and len(self.removed) < 3:
                self.removed.append(self._remove_empty_folders(time.time_ns()))
            return fds

    store = Swept(tmp_path)
    try:
        key = "d/d/d/" + "x" * 130  # folders on posix and on posixflat
        store.write(key, b"made again")
        print(f"folders swept before each of the first 3 renames: {Swept.removed}")
        assert len(Swept.removed) == 3 and all(Swept.removed)
        assert store.read_bytes(key) == b"made again"
    finally:
        store.close()


def test_sweeping_folders_under_live_writers(tmp_path: Path, stores: list[FileTreeStorage]) -> None:
    """Sweeps while other processes write deep keys never break a write (folders swept under
    a writer are made again; see the test above for a sure case).

    On posix only: its deep keys make 200 folders a write, so sweeps often catch some.
    """
    stores.append(PosixStorage(tmp_path))
    writers = [start_deep_writer(stores[0], n, 40) for n in range(2)]
    sweeps = removed = 0
    deadline = time.monotonic() + 20
    while any(writer.poll() is None for writer in writers) and time.monotonic() < deadline:
        removed += stores[0]._remove_empty_folders(time.time_ns())
        sweeps += 1
    kept = []
    for writer in writers:
        out, _ = writer.communicate(timeout=30)
        assert writer.returncode == 0 and out.endswith("DONE\n")
        kept += [line.split()[1] for line in out.splitlines() if line.startswith("KEPT ")]
    print(f"{sweeps} sweeps during 80 deep writes removed {removed} folders")
    assert check_objects_whole(stores[0], kept) == len(kept) == 40


@BACKENDS
def test_a_write_whose_temporary_was_removed_fails_at_once(
    tmp_path: Path, backend: Backend, stores: list[FileTreeStorage]
) -> None:
    stores.append(backend(tmp_path))

    def source() -> Iterator[bytes]:
        yield b"part"
        stores[0].cleanup(older_than=0)
        yield b"rest"

    with pytest.raises(StorageIOError, match="temporary"):
        stores[0].write("a/b", source())
    with pytest.raises(NotExistError):
        stores[0].read_bytes("a/b")
    assert leftovers(tmp_path) == (0, 0)
