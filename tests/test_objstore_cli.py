"""The ``objstore`` command line, run as a process, on a posix store and on S3 (the test server)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import secrets
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import urllib3

from objstore import ObjectInfo, PosixStorage, Storage
from objstore.cli.arguments import ByteRange, byte_range
from tests import s3env
from tests.conftest import S3Endpoint
from tests.faultproxy import Fault, FaultProxy, Rule

TIMEOUT = 120


@attrs.frozen
class Store:
    """A store the tests fill through the API and read through the command line at ``url``."""

    storage: Storage
    url: str  # ends with "/"


def objstore(
    *args: str, cwd: Path, stdin: bytes | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run ``objstore ARGS`` as a process (stdin from ``stdin``, else none); its result."""
    return subprocess.run(
        [sys.executable, "-m", "objstore", *args],
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    """The one line a failure says (checked: the exit code, no traceback)."""
    stderr = result.stderr.decode()
    assert result.returncode == code, (result.returncode, stderr)
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("objstore: "), stderr
    return stderr.strip().splitlines()[-1]


@pytest.fixture(params=["posix", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    if request.param == "posix":
        storage: Storage = PosixStorage(tmp_path / "store")
        url = f"file://{tmp_path}/store/"
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = request.getfixturevalue("s3_bucket")()
        s3env.use_test_server(monkeypatch, tmp_path, endpoint)  # the processes inherit it
        storage = endpoint.storage(bucket)
        url = f"s3://{bucket}/"
    try:
        yield Store(storage, url)
    finally:
        storage.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty working folder of the processes."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def fill(storage: Storage, keys: list[str], size: int = 100) -> dict[str, bytes]:
    data = {key: secrets.token_bytes(size) for key in keys}
    for key, value in data.items():
        storage.write(key, value)
    return data


def contents(storage: Storage, prefix: str = "") -> dict[str, bytes]:
    return {
        info.key: storage.read_bytes(info.key)
        for info in storage.list(prefix)
        if isinstance(info, ObjectInfo)
    }


def tree(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# -- ls, stat, cat ------------------------------------------------------------------------


def test_ls_lists_one_level_or_all_in_key_order(store: Store, work: Path) -> None:
    fill(store.storage, ["b", "a/2", "a/1", "a-c", "z/deep/x"])
    assert ok(objstore("ls", store.url, cwd=work)).splitlines() == ["a-c", "a/", "b", "z/"]
    assert ok(objstore("ls", "-r", store.url, cwd=work)).splitlines() == [
        "a-c",
        "a/1",
        "a/2",
        "b",
        "z/deep/x",
    ]
    assert ok(objstore("ls", store.url + "a/", cwd=work)).splitlines() == ["a/1", "a/2"]
    assert ok(objstore("ls", store.url + "nothing/", cwd=work)) == ""


def test_ls_long_and_json_tell_size_time_and_etag(store: Store, work: Path) -> None:
    fill(store.storage, ["logs/one", "logs/sub/two"], size=1234)
    infos = {info.key: info for info in store.storage.list() if isinstance(info, ObjectInfo)}
    long = ok(objstore("ls", "-l", store.url + "logs/", cwd=work)).splitlines()
    one = infos["logs/one"]
    assert long[0].split() == [
        *one.last_modified.strftime("%Y-%m-%d %H:%M:%S").split(),
        "1234",
        one.etag,
        "logs/one",
    ]
    assert long[1].split() == ["PRE", "logs/sub/"]
    lines = ok(objstore("ls", "-r", "--json", store.url, cwd=work)).splitlines()
    listed = [json.loads(line) for line in lines]
    assert [item["key"] for item in listed] == sorted(infos)
    for item in listed:
        info = infos[item["key"]]
        assert (item["size"], item["etag"], item["last_modified"]) == (
            info.size,
            info.etag,
            info.last_modified.isoformat(),
        )
    assert json.loads(ok(objstore("ls", "--json", store.url, cwd=work))) == {"prefix": "logs/"}


def test_stat_describes_an_object(store: Store, work: Path) -> None:
    store.storage.write("doc.json", b"{}", content_type="application/json", metadata={"owner": "ci"})
    info = store.storage.stat("doc.json")
    data = json.loads(ok(objstore("stat", "--json", store.url + "doc.json", cwd=work)))
    assert data["key"] == "doc.json" and data["size"] == 2 and data["etag"] == info.etag
    if store.storage.supports_metadata:
        assert data["content_type"] == "application/json" and data["metadata"] == {"owner": "ci"}
    text = ok(objstore("stat", store.url + "doc.json", cwd=work))
    assert f"etag:           {info.etag}" in text and "size:           2" in text


def test_cat_writes_the_object_or_a_range_byte_for_byte(store: Store, work: Path) -> None:
    data = fill(store.storage, ["big"], size=3 * (1 << 20) + 17)["big"]
    url = store.url + "big"
    assert objstore("cat", url, cwd=work).stdout == data
    size = len(data)
    for text, expected in [
        ("0-0", data[:1]),
        ("10-19", data[10:20]),
        ("1048570-", data[1048570:]),
        ("-5", data[-5:]),
        (f"{size - 3}-{size + 100}", data[-3:]),
        (f"{size + 10}-", b""),
        (f"-{size + 10}", data),
    ]:
        result = objstore("cat", "--range", text, url, cwd=work)
        assert result.returncode == 0 and result.stdout == expected, text


def test_byte_ranges_parse_as_http_ranges() -> None:
    assert byte_range("3-7").bounds(10) == (3, 8)
    assert byte_range("3-").bounds(10) == (3, 10)
    assert byte_range("-3").bounds(10) == (7, 10)
    assert byte_range("12-20").bounds(10) == (10, 10)
    assert byte_range("-0") == ByteRange(None, 0) and byte_range("-0").bounds(10) == (10, 10)
    for bad in ["", "-", "3", "a-b", "7-3", "1-2-3", " 1-2"]:
        with pytest.raises(Exception, match="range"):
            byte_range(bad)


# -- cp ---------------------------------------------------------------------------------


def test_cp_uploads_and_downloads_a_file(store: Store, work: Path) -> None:
    payload = secrets.token_bytes(2 * (1 << 20) + 3)
    (work / "report.html").write_bytes(payload)
    out = ok(objstore("cp", "report.html", store.url + "reports/", cwd=work))
    assert out == f"upload: report.html -> {store.url}reports/report.html\n"
    assert store.storage.read_bytes("reports/report.html") == payload
    if store.storage.supports_metadata:
        assert store.storage.stat("reports/report.html").content_type == "text/html"
    ok(objstore("cp", store.url + "reports/report.html", "back/copy.html", cwd=work))
    assert (work / "back" / "copy.html").read_bytes() == payload
    modified = store.storage.stat("reports/report.html").last_modified.timestamp()
    assert abs((work / "back" / "copy.html").stat().st_mtime - modified) < 1e-3
    ok(objstore("cp", store.url + "reports/report.html", ".", cwd=work))  # into a folder, by name
    assert (work / "report.html").read_bytes() == payload
    assert [path.name for path in (work / "back").iterdir()] == ["copy.html"]  # no temporary left


def test_cp_streams_stdin_and_stdout(store: Store, work: Path) -> None:
    ok(objstore("cp", "-", store.url + "piped", cwd=work, stdin=b"from stdin\n"))
    assert store.storage.read_bytes("piped") == b"from stdin\n"
    result = objstore("cp", store.url + "piped", "-", cwd=work)
    assert (result.returncode, result.stdout) == (0, b"from stdin\n")
    result = objstore("cp", "-", store.url + "folder/", cwd=work, stdin=b"x")
    assert result.returncode == 2 and b"stdin has no name to take inside" in result.stderr
    assert list(store.storage.list_keys()) == ["piped"]


def test_cp_between_stores_and_within_one(store: Store, work: Path, tmp_path: Path) -> None:
    store.storage.write("src/a.txt", b"alpha", content_type="text/plain", metadata={"k": "v"})
    ok(objstore("cp", store.url + "src/a.txt", store.url + "dst/b.txt", cwd=work))
    assert store.storage.read_bytes("dst/b.txt") == b"alpha"
    other = PosixStorage(tmp_path / "other")
    other_url = f"file://{tmp_path}/other/"
    ok(objstore("cp", store.url + "src/a.txt", other_url + "copied.txt", cwd=work))
    assert other.read_bytes("copied.txt") == b"alpha"
    if store.storage.supports_metadata and other.supports_metadata:
        info = other.stat("copied.txt")
        assert (info.content_type, dict(info.metadata or {})) == ("text/plain", {"k": "v"})
    ok(objstore("cp", other_url + "copied.txt", store.url + "back.txt", cwd=work))
    assert store.storage.read_bytes("back.txt") == b"alpha"


def test_cp_makes_a_posix_store_where_there_is_none(work: Path, tmp_path: Path) -> None:
    (work / "f").write_bytes(b"x")
    ok(objstore("cp", "f", f"file://{tmp_path}/new/", cwd=work))
    assert PosixStorage(tmp_path / "new").read_bytes("f") == b"x"
    # Reading commands never make one.
    line = failed(objstore("ls", f"file://{tmp_path}/none/", cwd=work))
    assert "no posix store at or above" in line and not (tmp_path / "none").exists()


def test_keys_that_look_like_a_store_do_not_move_the_root(work: Path, tmp_path: Path) -> None:
    """Keys "data/x" and "locks" make the store's own data/ folder look like a store: the
    root is found from the top, so it is never taken for one (nor given a tmp/ folder)."""
    storage = PosixStorage(tmp_path / "root")
    storage.write("data/x", b"the key data/x")
    storage.write("locks", b"a key, not a lock file")
    result = objstore("stat", "--json", f"file://{tmp_path}/root/data/x", cwd=work)
    assert json.loads(ok(result))["key"] == "data/x"
    assert sorted(path.name for path in (tmp_path / "root" / "data").iterdir()) == ["data", "locks"]


def test_cp_recursive_copies_a_tree_both_ways(store: Store, work: Path) -> None:
    source = work / "site"
    for name in ["index.html", "css/main.css", "img/a/b/logo.png", "img/with space.png"]:
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(5000))
    result = objstore("cp", "-r", "-j", "3", "site", store.url + "www", cwd=work)
    assert ok(result).count("upload: ") == 4
    assert contents(store.storage, "www/") == {"www/" + key: value for key, value in tree(source).items()}
    ok(objstore("cp", "-r", store.url + "www/", "copy", cwd=work))
    assert tree(work / "copy") == tree(source)
    ok(objstore("cp", "-r", store.url + "www/", store.url + "mirror/", cwd=work))
    assert contents(store.storage, "mirror/") == {
        "mirror/" + key: value for key, value in tree(source).items()
    }


def test_cp_no_clobber_refuses_what_exists_and_changes_nothing(store: Store, work: Path) -> None:
    store.storage.write("kept", b"old")
    (work / "kept").write_bytes(b"new")
    line = failed(objstore("cp", "-n", "kept", store.url + "kept", cwd=work))
    assert line == f"objstore: kept -> {store.url}kept: object 'kept' already exists"
    assert store.storage.read_bytes("kept") == b"old"
    line = failed(objstore("cp", "-n", store.url + "kept", "kept", cwd=work))
    assert "already exists" in line and (work / "kept").read_bytes() == b"new"
    assert sorted(os.listdir(work)) == ["kept"]
    # Recursive: what is missing is copied, each clash is said, and the exit code says so.
    (work / "tree").mkdir()
    (work / "tree" / "kept").write_bytes(b"new")
    (work / "tree" / "fresh").write_bytes(b"fresh")
    result = objstore("cp", "-r", "-n", "tree", store.url, cwd=work)
    assert "already exists" in failed(result)
    assert store.storage.read_bytes("kept") == b"old" and store.storage.read_bytes("fresh") == b"fresh"


def test_a_download_never_leaves_its_folder(store: Store, work: Path) -> None:
    fill(store.storage, ["in/fine"])
    if not isinstance(store.storage, PosixStorage):  # posix keys have no empty segment
        fill(store.storage, ["in//tmp/escaped"])
        result = objstore("cp", "-r", store.url + "in/", "dest", cwd=work)
        assert "it has no path inside the folder" in failed(result)
        assert tree(work) == {"dest/fine": store.storage.read_bytes("in/fine")}
    ok(objstore("cp", store.url + "in/fine", "dest/fine", cwd=work))
    (work / "outside").mkdir()
    (work / "dest" / "link").symlink_to(work / "outside")
    fill(store.storage, ["in/link/planted"])
    assert "goes through the link" in failed(objstore("cp", "-r", store.url + "in/", "dest", cwd=work))
    assert list((work / "outside").iterdir()) == []


# -- rm ---------------------------------------------------------------------------------


def test_rm_deletes_an_object_and_says_when_it_is_missing(store: Store, work: Path) -> None:
    fill(store.storage, ["a", "b"])
    assert ok(objstore("rm", store.url + "a", cwd=work)) == f"delete: {store.url}a\n"
    assert list(store.storage.list_keys()) == ["b"]
    assert (
        failed(objstore("rm", store.url + "a", cwd=work))
        == f"objstore: {store.url}a: object 'a' does not exist"
    )
    assert "names a prefix" in failed(objstore("rm", store.url, cwd=work))


def test_rm_recursive_asks_first_and_deletes_only_the_prefix(store: Store, work: Path) -> None:
    keys = [f"tmp/{number:04}" for number in range(30)] + ["tmp-keep", "other/x"]
    fill(store.storage, keys)
    line = failed(objstore("rm", "-r", store.url + "tmp", cwd=work))
    assert "not deleted: confirm on a terminal, or pass --yes" in line
    assert len(list(store.storage.list_keys())) == 32
    out = ok(objstore("rm", "-r", "--yes", store.url + "tmp", cwd=work))
    assert out.count("delete: ") == 30
    assert list(store.storage.list_keys()) == ["other/x", "tmp-keep"]


def test_rm_recursive_confirms_on_a_terminal(store: Store, work: Path) -> None:
    fill(store.storage, ["tmp/1", "tmp/2"])
    answered = run_on_terminal(["rm", "-r", store.url + "tmp/"], work, answer=b"n\n")
    assert answered.code == 1 and b"delete 2 object(s) under" in answered.output
    assert len(list(store.storage.list_keys())) == 2
    answered = run_on_terminal(["rm", "-r", store.url + "tmp/"], work, answer=b"y\n")
    assert answered.code == 0 and list(store.storage.list_keys()) == []


# -- sync -------------------------------------------------------------------------------


def test_sync_copies_what_is_missing_or_different_and_then_nothing(store: Store, work: Path) -> None:
    source = work / "data"
    source.mkdir()
    for name in ["same", "changed", "resized", "new/deep"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(secrets.token_bytes(64))
    out = ok(objstore("sync", "data", store.url + "mirror", cwd=work))
    assert out.count("upload: ") == 4
    assert ok(objstore("sync", "data", store.url + "mirror", cwd=work)) == ""
    (source / "changed").write_bytes(secrets.token_bytes(64))  # the same size
    (source / "resized").write_bytes(b"short")
    store.storage.write("mirror/extra", b"only in the store")
    dry = ok(objstore("sync", "--delete", "--dry-run", "data", store.url + "mirror/", cwd=work))
    assert sorted(dry.splitlines()) == [
        f"(dry run) delete: {store.url}mirror/extra",
        f"(dry run) upload: data/changed -> {store.url}mirror/changed",
        f"(dry run) upload: data/resized -> {store.url}mirror/resized",
    ]
    assert store.storage.read_bytes("mirror/resized") != b"short"
    out = ok(objstore("sync", "--delete", "data", store.url + "mirror/", cwd=work))
    assert sorted(line.split(":")[0] for line in out.splitlines()) == ["delete", "upload", "upload"]
    assert contents(store.storage, "mirror/") == {
        "mirror/" + key: value for key, value in tree(source).items()
    }


def test_sync_downloads_and_then_finds_the_copy_current(store: Store, work: Path) -> None:
    fill(store.storage, ["pub/a", "pub/b/c"], size=1 << 20)
    assert ok(objstore("sync", store.url + "pub/", "local", cwd=work)).count("download: ") == 2
    assert ok(objstore("sync", store.url + "pub/", "local", cwd=work)) == ""
    (work / "local" / "stale").write_bytes(b"x")
    ok(objstore("sync", "--delete", store.url + "pub/", "local", cwd=work))
    assert tree(work / "local") == {key[4:]: value for key, value in contents(store.storage, "pub/").items()}


def test_sync_compares_times_where_an_etag_is_no_md5(store: Store, work: Path) -> None:
    """A multipart upload's etag is no MD5 of the content: sync goes by the time instead."""
    if isinstance(store.storage, PosixStorage):
        pytest.skip("every posix object's MD5 can be read")
    url = f"{store.url}parts/?part_size={5 << 20}"  # a 6 MiB file goes in two parts
    (work / "data").mkdir()
    big = work / "data" / "big"
    big.write_bytes(secrets.token_bytes(6 << 20))
    ok(objstore("sync", "data", url, cwd=work))
    assert "-" in store.storage.stat("parts/big").etag
    assert ok(objstore("sync", "data", url, cwd=work)) == ""  # older than the object
    big.write_bytes(secrets.token_bytes(6 << 20))  # the same size, changed after the upload
    later = store.storage.stat("parts/big").last_modified.timestamp() + 2
    os.utime(big, (later, later))
    assert ok(objstore("sync", "data", url, cwd=work)).startswith("upload: ")
    assert store.storage.read_bytes("parts/big") == big.read_bytes()


def test_sync_between_two_stores(store: Store, work: Path, tmp_path: Path) -> None:
    fill(store.storage, ["s/1", "s/2"])
    other_url = f"file://{tmp_path}/other/"
    assert ok(objstore("sync", store.url + "s", other_url, cwd=work)).count("copy: ") == 2
    assert ok(objstore("sync", store.url + "s", other_url, cwd=work)) == ""
    assert contents(PosixStorage(tmp_path / "other")) == {
        key[2:]: value for key, value in contents(store.storage, "s/").items()
    }


# -- presign ------------------------------------------------------------------------------


def test_presign_gives_a_url_any_client_can_use(store: Store, work: Path) -> None:
    store.storage.write("shared.txt", b"for anyone")
    result = objstore("presign", "--expires", "60", store.url + "shared.txt", cwd=work)
    if isinstance(store.storage, PosixStorage):
        assert failed(result).endswith("shared.txt: only an s3:// object has a presigned URL")
        return
    answer = urllib3.request("GET", ok(result).strip(), timeout=10, retries=False)
    assert (answer.status, answer.data) == (200, b"for anyone")
    put = ok(objstore("presign", "--method", "PUT", store.url + "upload.txt", cwd=work)).strip()
    assert urllib3.request("PUT", put, body=b"put", timeout=10, retries=False).status == 200
    assert store.storage.read_bytes("upload.txt") == b"put"


# -- errors -------------------------------------------------------------------------------


def test_errors_name_the_object_and_the_cause(store: Store, work: Path) -> None:
    url = store.url
    assert (
        failed(objstore("cat", url + "missing", cwd=work))
        == f"objstore: {url}missing: object 'missing' does not exist"
    )
    assert "names a prefix, not an object" in failed(objstore("stat", url + "dir/", cwd=work))
    assert "invalid key" in failed(objstore("cat", url + "x" * 2000, cwd=work))
    line = failed(objstore("cp", "absent.txt", url, cwd=work))
    assert line == f"objstore: absent.txt -> {url}absent.txt: No such file or directory"
    if isinstance(store.storage, PosixStorage):
        store.storage.write("a", b"file")
        (work / "f").write_bytes(b"x")
        assert "conflicts with the posix tree" in failed(objstore("cp", "f", url + "a/b", cwd=work))
    else:
        line = failed(objstore("ls", url + "?colour=red", cwd=work))
        assert "unknown option(s): colour" in line


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["ls"],
        ["frobnicate"],
        ["cat", "--range", "9-1", "s3://b/k"],
        ["cp", "a", "b"],
        ["ls", "relative/path"],
        ["cp", "-j", "0", "a", "s3://b/"],
        ["presign", "--expires", "999999999", "s3://b/k"],
    ],
)
def test_usage_errors_exit_2(args: list[str], work: Path) -> None:
    result = objstore(*args, cwd=work)
    assert result.returncode == 2, result.stderr
    assert b"usage: objstore" in result.stderr and b"Traceback" not in result.stderr


def test_bad_urls_exit_1_naming_them(work: Path) -> None:
    for url, cause in [
        ("gs://bucket/key", "a store URL is s3://bucket/key or file:///path"),
        ("memory://", "lives inside one process"),
        ("s3:///key", "names a bucket"),
        ("file://host/x", "file:///absolute/path"),
    ]:
        line = failed(objstore("ls", url, cwd=work))
        assert line.startswith(f"objstore: {url}: ") and cause in line, line


# -- S3 faults ----------------------------------------------------------------------------


@pytest.fixture
def faulty(
    fault_proxy: FaultProxy,
    s3_endpoint: S3Endpoint,
    s3_bucket: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Store, FaultProxy]]:
    """A bucket the processes reach through the fault proxy (the test's own store goes direct)."""
    bucket = s3_bucket()
    s3env.use_test_server(monkeypatch, tmp_path, s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{fault_proxy.endpoint}")
    with s3_endpoint.storage(bucket) as storage:
        yield Store(storage, f"s3://{bucket}/"), fault_proxy


def test_transfers_through_faults_arrive_whole(faulty: tuple[Store, FaultProxy], work: Path) -> None:
    store, proxy = faulty
    (work / "up").mkdir()
    files = {f"f{number}": secrets.token_bytes(50_000 + number) for number in range(12)}
    for name, data in files.items():
        (work / "up" / name).write_bytes(data)
    proxy.plan(
        Rule(Fault.STATUS_503, method="PUT", probability=0.3),
        Rule(Fault.RESET_AFTER, method="PUT", probability=0.2),
        Rule(Fault.RESET, method="HEAD", probability=0.2),
        seed=7,
    )
    ok(objstore("cp", "-r", "-n", "up", store.url + "up?backoff=0.01", cwd=work))
    assert contents(store.storage) == {f"up/{name}": data for name, data in files.items()}
    proxy.plan(
        Rule(Fault.CUT, method="GET", probability=0.3),
        Rule(Fault.GARBLE, method="GET", probability=0.2),
        Rule(Fault.STATUS_503, method="GET", probability=0.2),
        seed=8,
    )
    ok(objstore("cp", "-r", store.url + "up/?backoff=0.01", "down", cwd=work))
    assert tree(work / "down") == files
    assert objstore("cat", store.url + "up/f3?backoff=0.01", cwd=work).stdout == files["f3"]
    assert proxy.counts(), "no fault was injected"


def test_a_store_that_keeps_failing_is_one_line_and_exit_1(
    faulty: tuple[Store, FaultProxy], work: Path
) -> None:
    store, proxy = faulty
    store.storage.write("k", b"data")
    proxy.plan(Rule(Fault.STATUS_503))
    line = failed(objstore("cat", store.url + "k?retries=1&backoff=0", cwd=work))
    assert line == f"objstore: {store.url}k: S3 request for 'k' failed (status=503)"


def test_rm_recursive_deletes_in_batches(faulty: tuple[Store, FaultProxy], work: Path) -> None:
    """1,001 keys go in 2 delete requests (S3 takes 1,000 a request), not 1,001."""
    store, proxy = faulty
    for number in range(1001):
        store.storage.write(f"many/{number:05}", b"")
    before = proxy.requests
    assert ok(objstore("rm", "-r", "-y", "-q", store.url + "many/", cwd=work)) == ""
    assert list(store.storage.list_keys()) == []
    assert proxy.requests - before == 2 + 2  # two listing pages, two batches


# -- the progress bar ----------------------------------------------------------------------


@attrs.frozen
class Answered:
    code: int
    output: bytes  # stdout and stderr, as the terminal showed them


def run_on_terminal(
    args: list[str], cwd: Path, *, answer: bytes = b"", quiet_stdout: bool = False
) -> Answered:
    """Run ``objstore ARGS`` with stdin and stderr on a pseudo-terminal (stdout too, unless
    ``quiet_stdout``), typing ``answer``; what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    stdout = subprocess.DEVNULL if quiet_stdout else follower
    process = subprocess.Popen(
        [sys.executable, "-m", "objstore", *args], cwd=cwd, stdin=follower, stdout=stdout, stderr=follower
    )
    os.close(follower)
    if answer:
        os.write(leader, answer)
    output = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: every process holding it is gone
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return Answered(process.wait(timeout=TIMEOUT), bytes(output))


def test_the_progress_bar_shows_on_a_terminal_only(store: Store, work: Path) -> None:
    (work / "big").write_bytes(secrets.token_bytes(20 * (1 << 20)))
    shown = run_on_terminal(["cp", "big", store.url + "big"], work)
    assert shown.code == 0, shown.output
    assert b"B/s" in shown.output and b"20.0M/20.0M" in shown.output  # the rate, the bytes moved
    piped = objstore("cp", "big", store.url + "piped", cwd=work)
    assert piped.returncode == 0 and piped.stderr == b""
    quiet = run_on_terminal(["cp", "--quiet", "big", store.url + "quiet"], work)
    assert quiet.code == 0 and quiet.output == b""


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "objstore"
    result = subprocess.run([str(script), "--help"], capture_output=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0 and b"usage: objstore" in result.stdout
    assert b"demo" in result.stdout


def test_the_demo_is_a_subcommand(work: Path) -> None:
    assert "read back 'logs/task-1/steps/0.log'" in ok(objstore("demo", "data", cwd=work))
