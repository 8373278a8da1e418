"""Cache groups: a group sees only its own caches; groups and keys are checked where they are built.

In process (``RunStore.caches`` on a memory and a posix store) and over the runservice's
HTTP API, with runs that name an explicit cache group.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import MemoryStorage, Storage
from objstore.posix import PosixStorage
from runstore import CacheGroup, InvalidIdError, RunStore, cache_group_for_direct_run, cache_group_for_project
from runstore.cache_groups import MAX_CACHE_KEY_LENGTH
from runstore.contract.codec import to_data
from runstore.contract.errors import BadRequestError
from runstore.contract.http.server import ServerThread
from runstore.contract.model import Run, RunConfig, RunPhase, Step, StepKind, TaskConfig
from runstore.contract.routes import RunServiceRoutes
from runstore.executor.executor import Executor
from runstore.runservice.api import RunServiceApp, serve
from runstore.runservice.lease import LEASE_KEY
from runstore.runservice.service import RunService

# Few, overlapping names, so that groups share ids and keys are prefixes of each other
# and of the parts of other groups' paths.
IDS = ["a", "aa", "alice", "repos", "aaaa", "r.1", "x_y"]
KEYS = ["repos", "repos-x", "deps", "deps-v1", "deps-v1.tar", "a", "aa", "aaaa", "r"]
FOLDERS = ["repos", "aaaa", "deps"]  # never "<key>.tar": posix has no object and folder of one name

groups = st.one_of(
    st.builds(cache_group_for_project, st.sampled_from(IDS)),
    st.builds(CacheGroup.named, st.sampled_from(IDS)),
    st.builds(cache_group_for_direct_run, st.sampled_from(IDS), st.sampled_from(IDS)),
)

VALID_PATH = re.compile(
    r"(projects/{id}|groups/{id}|users/{id}/repos/{id})".format(id=r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
)

INVALID_GROUPS = [
    "users/alice",  # the reported case: a prefix of every group of alice's repositories
    "users/alice/repos",
    "users/alice/repos/aaaa/deps",
    "users/alice/branches/aaaa",
    "projects",
    "projects/",
    "projects/a/b",
    "projects/a/",
    "/projects/a",
    "projects//a",
    "projects/.a",
    "projects/a b",
    "projects/" + "a" * 129,
    "groups/..",
    "teams/a",
    "../x",
    "",
]


def data_of(group: CacheGroup, key: str) -> bytes:
    return f"{group.path}|{key}".encode()


def make_storage(backend: str, folder: str) -> Storage:
    return MemoryStorage() if backend == "memory" else PosixStorage(folder)


# -- in process


@pytest.mark.parametrize("backend", ["memory", "posix"])
@settings(max_examples=60)
@given(
    saves=st.lists(st.tuples(groups, st.sampled_from(KEYS)), max_size=12),
    strays=st.lists(st.tuples(groups, st.sampled_from(FOLDERS), st.sampled_from(KEYS)), max_size=4),
    queries=st.lists(st.tuples(groups, st.lists(st.sampled_from(KEYS), min_size=1, max_size=3)), max_size=6),
)
def test_a_restore_never_returns_another_groups_cache(
    backend: str,
    saves: list[tuple[CacheGroup, str]],
    strays: list[tuple[CacheGroup, str, str]],
    queries: list[tuple[CacheGroup, list[str]]],
) -> None:
    """Whatever the groups, keys and prefixes, a restore finds what the group's own caches give.

    ``strays`` are objects below a group's folder, as a group nested in it would have
    left them (``users/alice`` above ``users/alice/repos/aaaa``): none is a cache of it.
    """
    with tempfile.TemporaryDirectory() as folder:
        storage = make_storage(backend, folder)
        try:
            store = RunStore(storage)
            for group, below, key in strays:
                storage.write(f"caches/{group.path}/{below}/{key}.tar", b"stray")
            saved: set[tuple[CacheGroup, str]] = set()
            for group, key in saves:
                assert store.caches(group).save(key, data_of(group, key)) == ((group, key) not in saved)
                saved.add((group, key))
            for group, keys in [*queries, *((group, [key]) for group, key in saves)]:
                own = {key for other, key in saved if other == group}
                expected: set[str] = set()
                for key in keys:  # the first key that matches: exactly, else as a prefix
                    expected = {key} if key in own else {mine for mine in own if mine.startswith(key)}
                    if expected:
                        break
                found = store.caches(group).restore(keys)
                if not expected:
                    assert found is None
                    continue
                assert found is not None and found.key in expected
                with found.stream as stream:
                    assert stream.read() == data_of(group, found.key)
                assert store.caches(group).keys() == sorted(own)
        finally:
            storage.close()


@pytest.mark.parametrize("backend", ["memory", "posix"])
def test_the_reported_case(backend: str, tmp_path: Path) -> None:
    """``users/alice`` + prefix ``repos`` found ``repos/aaaa/deps-v1`` of ``users/alice/repos/aaaa``."""
    store = RunStore(make_storage(backend, str(tmp_path)))
    assert store.caches(cache_group_for_direct_run("alice", "aaaa")).save("deps-v1", b"alice's deps")
    with pytest.raises(InvalidIdError, match="'users/alice'"):
        CacheGroup("users/alice")
    for group in (
        cache_group_for_project("alice"),
        CacheGroup.named("alice"),
        cache_group_for_direct_run("alice", "a"),
    ):
        assert store.caches(group).restore(["repos", "a", "deps"]) is None
    found = store.caches(cache_group_for_direct_run("alice", "aaaa")).restore(["repos", "deps"])
    assert found is not None and found.key == "deps-v1"
    found.stream.close()


@pytest.mark.parametrize("backend", ["memory", "posix"])
def test_only_the_groups_own_folder_is_listed(backend: str, tmp_path: Path) -> None:
    """Objects below a group's folder (not written as its caches) are no caches of the group."""
    storage = make_storage(backend, str(tmp_path))
    stray = ["caches/projects/web/repos/aaaa/deps-v1.tar", "caches/projects/web/deps-v2/x.tar"]
    for key in stray:
        storage.write(key, b"not a cache of projects/web")
    caches = RunStore(storage).caches(cache_group_for_project("web"))
    assert caches.restore(["repos", "deps"]) is None
    assert caches.keys() == []
    assert caches.expire(timedelta(0)) == 0
    assert sorted(entry.key for entry in storage.list()) == sorted(stray)


@pytest.mark.parametrize("backend", ["memory", "posix"])
def test_infos_and_delete_many_see_the_groups_own_caches_only(backend: str, tmp_path: Path) -> None:
    """Sorted by key ("a" before "a-b", whose object sorts first); a stray below the folder and
    another group's cache are neither listed nor deleted; a bad key deletes nothing."""
    storage = make_storage(backend, str(tmp_path))
    store = RunStore(storage)
    caches = store.caches(cache_group_for_project("web"))
    for key, data in (("a-b", b"12"), ("a", b"1"), ("c", b"123")):
        assert caches.save(key, data)
    assert store.caches("other").save("a", b"theirs")
    storage.write("caches/projects/web/below/a.tar", b"stray")
    assert [(info.key, info.size) for info in caches.infos()] == [("a", 1), ("a-b", 2), ("c", 3)]
    with pytest.raises(InvalidIdError, match="'a/b'"):
        caches.delete_many(["a", "a/b"])
    assert caches.keys() == ["a", "a-b", "c"]
    assert caches.delete_many(["c", "a", "nope"]) == ["a", "c"]
    assert caches.delete_many(None) == ["a-b"]
    assert caches.infos() == [] and store.caches("other").keys() == ["a"]
    assert storage.exists("caches/projects/web/below/a.tar")


@pytest.mark.parametrize("backend", ["memory", "posix"])
def test_a_prefix_matches_keys_not_object_names(backend: str, tmp_path: Path) -> None:
    """The object of ``deps-v1`` is ``deps-v1.tar``: the prefix ``deps-v1.t`` does not match it."""
    caches = RunStore(make_storage(backend, str(tmp_path))).caches("shared")
    assert caches.save("deps-v1", b"x")
    assert caches.restore(["deps-v1.t", "deps-v1.tar"]) is None
    found = caches.restore(["deps-v1.t", "deps-v"])
    assert found is not None and found.key == "deps-v1"
    found.stream.close()


@pytest.mark.parametrize("path", [*INVALID_GROUPS, 5, None])
def test_cache_group_refuses_invalid_paths(path: object) -> None:
    with pytest.raises(InvalidIdError, match="cache group") as caught:
        CacheGroup(path)  # type: ignore[arg-type]
    assert caught.value.value == path


@given(st.text(alphabet="ab/.-_ ", max_size=20).map(lambda tail: "users/" + tail) | st.text(max_size=30))
def test_cache_group_accepts_exactly_the_three_shapes(path: str) -> None:
    try:
        group = CacheGroup(path)
    except InvalidIdError:
        assert not VALID_PATH.fullmatch(path)
    else:
        assert VALID_PATH.fullmatch(path) and group.path == path


def test_the_cache_key_limit_is_one_rule() -> None:
    caches = RunStore(MemoryStorage()).caches("shared")
    longest = "k" * MAX_CACHE_KEY_LENGTH
    assert caches.save(longest, b"x")
    with pytest.raises(InvalidIdError, match="cache key"):
        caches.save(longest + "k", b"x")
    service = RunService(MemoryStorage()).start(loops=False)

    def config(key: str) -> RunConfig:
        return RunConfig([TaskConfig("t", [Step(StepKind.RESTORE_CACHE, keys=[key])])])

    service.runs.create(config(longest), "/project/p1/branch/main")
    with pytest.raises(BadRequestError, match="cache key"):
        service.runs.create(config(longest + "k"), "/project/p1/branch/main")


def test_runs_take_an_explicit_cache_group() -> None:
    service = RunService(MemoryStorage()).start(loops=False)
    config = RunConfig([TaskConfig("t", [Step(StepKind.RUN, command="true")])])
    assert service.runs.create(config, "/project/p1/branch/main").cache_group == "projects/p1"
    assert service.runs.create(config, "/project/p1/branch/main", cache_group="shared").cache_group == (
        "groups/shared"
    )
    run = service.runs.create(
        config, "/user/u1/branch/b", repo_uuid="r1", cache_group=cache_group_for_project("p2")
    )
    assert run.cache_group == "projects/p2"
    before = service.state.runs.ids()
    for bad in ("a/b", "", "..", "groups/shared"):
        with pytest.raises(BadRequestError, match="cache group"):
            service.runs.create(config, "/project/p1/branch/main", cache_group=bad)
    assert service.state.runs.ids() == before
    with pytest.raises(InvalidIdError, match="cache group"):
        Run(id="r", group="/project/p1/branch/main", cache_group="users/alice", tasks=[])


# -- over HTTP


@pytest.fixture
def service() -> Iterator[RunService]:
    service = RunService(MemoryStorage()).start(loops=False)
    yield service
    service.stop()


@pytest.fixture
def api(service: RunService) -> Iterator[str]:
    server = ServerThread(RunServiceApp(service)).start()
    yield server.url
    server.stop()


def request(method: str, url: str, body: bytes | None = None) -> urllib3.BaseHTTPResponse:
    return urllib3.request(method, url, body=body, retries=False)


def caches_url(api: str, group: str, *keys: str) -> str:
    return f"{api}{RunServiceRoutes.save_cache.path()}?" + urlencode(
        [("group", group), *(("key", key) for key in keys)]
    )


def test_the_reported_case_over_http(api: str) -> None:
    saved = request("PUT", caches_url(api, "users/alice/repos/aaaa", "deps-v1"), b"alice's deps")
    assert (saved.status, json.loads(saved.data)) == (200, {"saved": True})
    answer = request("GET", caches_url(api, "users/alice", "repos"))
    assert answer.status == 400, answer.headers.get("X-Cache-Key")
    assert json.loads(answer.data)["kind"] == "bad_request"
    assert "'users/alice'" in json.loads(answer.data)["message"]
    found = request("GET", caches_url(api, "users/alice/repos/aaaa", "repos", "deps"))
    assert (found.status, found.headers["X-Cache-Key"], found.data) == (200, "deps-v1", b"alice's deps")


@pytest.mark.parametrize("group", [group for group in INVALID_GROUPS if group])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_invalid_groups_get_400_over_http(api: str, service: RunService, group: str, method: str) -> None:
    answer = request(method, caches_url(api, group, "deps"), b"x" if method == "PUT" else None)
    assert answer.status == 400
    error = json.loads(answer.data)
    assert error["kind"] == "bad_request" and f"invalid cache group {group!r}" in error["message"]
    assert [entry.key for entry in service.state.storage.list()] == [LEASE_KEY]  # nothing else


@pytest.mark.parametrize("key", ["a/b", "../x", "k" * (MAX_CACHE_KEY_LENGTH + 1)])
def test_invalid_keys_get_400_over_http(api: str, service: RunService, key: str) -> None:
    for method in ("GET", "PUT"):
        answer = request(method, caches_url(api, "projects/p1", key), b"x" if method == "PUT" else None)
        assert answer.status == 400
        assert "invalid cache key" in json.loads(answer.data)["message"]
    assert [entry.key for entry in service.state.storage.list()] == [LEASE_KEY]  # nothing else


def post_run(api: str, config: RunConfig, **params: str) -> urllib3.BaseHTTPResponse:
    body = json.dumps(to_data(config)).encode()
    route = RunServiceRoutes.create_run
    return request(route.method, f"{api}{route.path()}?" + urlencode(params), body)


@pytest.mark.parametrize("bad", ["", "a/b", "groups/shared", "x" * 129])
def test_invalid_run_cache_groups_get_400(api: str, service: RunService, bad: str) -> None:
    config = RunConfig([TaskConfig("t", [Step(StepKind.RUN, command="true")])])
    answer = post_run(api, config, group="/project/p1/branch/main", cache_group=bad)
    assert answer.status == 400
    error = json.loads(answer.data)
    assert error["kind"] == "bad_request" and "cache group" in error["message"]
    assert service.state.runs.ids() == []


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def finished(service: RunService, run_id: str) -> Run:
    for _ in range(600):
        run = service.state.runs.get(run_id)
        if run.phase is RunPhase.FINISHED:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {service.state.runs.get(run_id)}")


def log_of(service: RunService, run: Run, task: str, step: int) -> bytes:
    with service.state.store.open_log(run.task(task).id, step) as log:
        return log.read()


def test_a_run_created_over_http_restores_from_its_explicit_group(tmp_path: Path) -> None:
    storage = MemoryStorage()
    shared = RunStore(storage).caches(CacheGroup.named("shared"))
    assert shared.save("deps-v1", tar_of({"deps/lib.txt": b"shared lib\n"}))  # saved by another party
    service = RunService(storage, interval=0.1)
    server = serve(service)
    executor = Executor(server.url, tmp_path, executor_id="ex1", interval=0.1).start()
    try:
        config = RunConfig(
            [
                TaskConfig(
                    "build",
                    [
                        Step(StepKind.RESTORE_CACHE, keys=["deps-"]),
                        Step(StepKind.RUN, command="cat deps/lib.txt || echo no lib"),
                        Step(StepKind.RUN, command="mkdir -p out && echo built > out/x"),
                        Step(StepKind.SAVE_CACHE, paths=["out"], keys=["out-v1"]),
                    ],
                )
            ]
        )
        answer = post_run(server.url, config, group="/project/p2/branch/main", cache_group="shared")
        assert answer.status == 201, answer.data
        created = json.loads(answer.data)
        assert created["cache_group"] == "groups/shared"
        run = finished(service, created["id"])
        assert run.result.value == "success", run
        assert b"restored cache 'deps-v1'" in log_of(service, run, "build", 0)
        assert b"shared lib" in log_of(service, run, "build", 1)
        assert shared.keys() == ["deps-v1", "out-v1"]  # the run saved into the explicit group
        assert service.state.store.caches(cache_group_for_project("p2")).keys() == []

        # Without cache_group, a run of the same project uses the project's group.
        answer = post_run(server.url, config, group="/project/p2/branch/main")
        assert answer.status == 201, answer.data
        run = finished(service, json.loads(answer.data)["id"])
        assert run.cache_group == "projects/p2"
        assert b"no cache matched" in log_of(service, run, "build", 0)
        assert b"no lib" in log_of(service, run, "build", 1)
    finally:
        executor.stop()
        server.stop()
        service.stop()
