"""The run store's API on every backend: logs, archives, references, caches."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest

from objstore import AlreadyExistsError, NotExistError
from runstore import (
    CacheGroup,
    InvalidIdError,
    RunStore,
    cache_group_for_direct_run,
    cache_group_for_project,
)
from tests.conftest import StorageFactory


@pytest.fixture
def store(make_storage: StorageFactory) -> RunStore:
    return RunStore(make_storage())


def make_task(store: RunStore, run_id: str, task_id: str, *, finish: bool = True) -> None:
    store.create_task(run_id, task_id)
    store.write_log(task_id, "setup", f"{task_id} setup".encode())
    store.write_log(task_id, 0, io.BytesIO(f"{task_id} step 0".encode()))
    store.write_archive(task_id, 1, iter([b"tar ", task_id.encode()]))
    if finish:
        store.finish_task(task_id)


def read_log(store: RunStore, task_id: str, step: int | str) -> bytes:
    with store.open_log(task_id, step) as stream:
        return stream.read()


def test_logs_and_archives_stream_both_ways(store: RunStore) -> None:
    make_task(store, "run1", "task1")
    assert read_log(store, "task1", "setup") == b"task1 setup"
    assert read_log(store, "task1", 0) == b"task1 step 0"
    with store.open_archive("task1", 1) as stream:
        assert stream.read() == b"tar task1"
    with pytest.raises(NotExistError):
        store.open_log("task1", 7)
    with pytest.raises(NotExistError):
        store.open_archive("task1", 0)
    keys = sorted(entry.key for entry in store.storage.list())
    assert keys == [
        "logs/task1/complete",
        "logs/task1/data/setup.log",
        "logs/task1/data/steps/0.log",
        "logs/task1/runs/run1",
        "workspacearchives/task1/complete",
        "workspacearchives/task1/data/1.tar",
        "workspacearchives/task1/runs/run1",
    ]


def test_shared_data_lives_until_the_last_reference_goes(store: RunStore) -> None:
    make_task(store, "run1", "task1")
    assert store.add_run("run2", "task1")  # a restart reuses the finished task
    store.delete_run("run1", ["task1"])
    assert read_log(store, "task1", 0) == b"task1 step 0"
    store.delete_run("run2", ["task1"])
    with pytest.raises(NotExistError):
        read_log(store, "task1", 0)
    assert list(store.storage.list()) == []


def test_incomplete_or_deleted_data_is_not_shared(store: RunStore) -> None:
    make_task(store, "run1", "task1", finish=False)
    assert not store.add_run("run2", "task1")
    assert sorted(entry.key for entry in store.storage.list("logs/task1/runs/")) == ["logs/task1/runs/run1"]
    store.remove_run("run1", "task1")
    assert not store.add_run("run3", "task1")
    assert list(store.storage.list()) == []


def test_create_task_refuses_an_existing_task(store: RunStore) -> None:
    make_task(store, "run1", "task1")
    with pytest.raises(AlreadyExistsError):
        store.create_task("run2", "task1")
    assert read_log(store, "task1", "setup") == b"task1 setup"


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (lambda store: store.create_task("run/1", "task1"), "run/1"),
        (lambda store: store.create_task("run1", "../task"), "../task"),
        (lambda store: store.add_run("run1", ""), ""),
        (lambda store: store.write_log("task1", -1, b"x"), -1),
        (lambda store: store.write_log("task1", "steps", b"x"), "steps"),
        (lambda store: store.write_archive("task1", "setup", b"x"), "setup"),
        (lambda store: store.open_log("t" * 129, 0), "t" * 129),
        (lambda store: store.caches("a/b"), "a/b"),
        (lambda store: store.caches("shared").save("../key", b"x"), "../key"),
        (lambda store: store.caches("shared").save(".hidden", b"x"), ".hidden"),
    ],
)
def test_ids_are_validated_before_anything_is_written(store: RunStore, call: object, value: object) -> None:
    with pytest.raises(InvalidIdError) as caught:
        call(store)  # type: ignore[operator]
    assert caught.value.value == value
    assert repr(value)[:30] in str(caught.value)
    assert list(store.storage.list()) == []


def test_collect_removes_what_crashes_left(store: RunStore) -> None:
    make_task(store, "run1", "kept")
    make_task(store, "gone-run", "orphaned")
    make_task(store, "run2", "unfinished", finish=False)
    store.storage.delete("logs/unfinished/runs/run2")  # a deleter crashed after the marker
    store.storage.delete("workspacearchives/unfinished/runs/run2")
    report = store.collect(grace=timedelta(hours=1), run_exists=lambda run_id: run_id != "gone-run")
    assert (report.markers_removed, report.areas_deleted) == (0, 0)  # all too young
    report = store.collect(grace=timedelta(0), run_exists=lambda run_id: run_id != "gone-run")
    assert (report.markers_removed, report.areas_deleted) == (2, 4)
    assert {entry.key.split("/")[1] for entry in store.storage.list()} == {"kept"}
    assert read_log(store, "kept", 0) == b"kept step 0"


def test_caches_first_writer_wins(store: RunStore) -> None:
    caches = store.caches(cache_group_for_project("p1"))
    assert caches.save("deps-abc", b"first")
    assert not caches.save("deps-abc", b"second")
    restored = caches.restore(["deps-abc"])
    assert restored is not None and restored.key == "deps-abc"
    with restored.stream as stream:
        assert stream.read() == b"first"
    assert caches.keys() == ["deps-abc"]


def test_restore_prefers_exact_then_newest_prefix(store: RunStore) -> None:
    caches = store.caches("shared-group")
    caches.save("deps-1", b"one")
    time.sleep(1.1)  # S3 times have whole seconds
    caches.save("deps-2", b"two")
    caches.save("deps", b"exact")
    assert caches.restore(["nothing", "deps"]).key == "deps"  # type: ignore[union-attr]
    caches.delete("deps")
    restored = caches.restore(["nothing", "deps-"])
    assert restored is not None and restored.key == "deps-2"
    with restored.stream as stream:
        assert stream.read() == b"two"
    assert caches.restore(["other"]) is None


def test_cache_groups_are_separate(store: RunStore) -> None:
    groups = [
        cache_group_for_project("p1"),
        cache_group_for_project("p2"),
        cache_group_for_direct_run("u1", "repo-a"),
        cache_group_for_direct_run("u1", "repo-b"),
        CacheGroup.named("p1"),
    ]
    assert len({group.path for group in groups}) == len(groups)
    for number, group in enumerate(groups):
        assert store.caches(group).save("key", str(number).encode())
    for number, group in enumerate(groups):
        restored = store.caches(group).restore(["key"])
        assert restored is not None
        with restored.stream as stream:
            assert stream.read() == str(number).encode()
    assert store.caches("p1").keys() == ["key"]  # a str names an explicit, shared group


def test_expire_counts_from_creation(store: RunStore) -> None:
    caches = store.caches(cache_group_for_project("p1"))
    caches.save("old", b"x")
    assert caches.expire(timedelta(hours=1)) == 0
    assert caches.expire(timedelta(0)) == 1
    assert caches.keys() == []
    with pytest.raises(InvalidIdError):
        caches.expire(timedelta(seconds=-1))
