"""Workspace archives and caches never write (or read) outside the workspace.

Every test builds its archives with tarfile and extracts them into ``<tmp>/outer/ws``
next to sentinel files; ``outside`` snapshots everything under ``<tmp>`` but the
workspace, before and after, and the two must be equal.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstore.contract.model import ExecutorTask, ExecutorTaskPhase, Step, StepKind
from runstore.executor.executor import Executor
from runstore.executor.files import (
    LIMITS,
    ArchiveError,
    ArchiveLimits,
    extract_tar,
    link_target_problem,
    write_tar,
)
from tests.executor_runservice import RunserviceStandIn

STEPS = "abcdefghijklmnop"  # the symlinks of the PATH_MAX trick, one per level

# -- building archives


@attrs.frozen
class Member:
    """One member to write: a file (``data``), a folder, a link (``target``) or a special file."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def file(name: str, data: bytes = b"x") -> Member:
    return Member(name, tarfile.REGTYPE, data=data)


def folder(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, target=target)


def hardlink(name: str, target: str) -> Member:
    return Member(name, tarfile.LNKTYPE, target=target)


def make_tar(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mode = member.mode
            info.linkname = member.target
            info.size = len(member.data)
            tar.addfile(info, io.BytesIO(member.data) if info.isfile() else None)
    return path


def path_max_members(workspace: Path, escape: str, payload: list[Member]) -> list[Member]:
    """The CVE-2025-4517 archive: ``escape`` is a symlink that ``realpath`` sees inside but leads out.

    A chain of one-letter symlinks to long folder names expands past PATH_MAX, where
    ``os.path.realpath`` (non-strict) stops resolving; ``escape`` points through the
    last link, one level above the workspace.
    """
    component = long_component(workspace)
    members: list[Member] = []
    path = ""
    for step in STEPS:
        members.append(folder(os.path.join(path, component)))
        members.append(symlink(os.path.join(path, step), component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*STEPS, "l" * 254)
    members.append(symlink(linkpath, os.path.join(*[".."] * len(STEPS))))
    members.append(symlink(escape, os.path.join(linkpath, "..")))
    return members + payload


def long_component(workspace: Path) -> str:
    """A folder name such that 16 of them under ``workspace`` come just under PATH_MAX."""
    path_max = os.pathconf(tempfile.gettempdir(), "PC_PATH_MAX")
    return "d" * min(255, (path_max - len(str(workspace)) - 1) // (len(STEPS) + 1))


# -- the sentinel


@attrs.frozen
class Place:
    """A workspace ``ws`` inside ``outer``, next to sentinel files."""

    top: Path

    @property
    def outer(self) -> Path:
        return self.top / "outer"

    @property
    def ws(self) -> Path:
        return self.outer / "ws"

    @classmethod
    def make(cls, top: Path) -> Place:
        place = cls(top)
        place.ws.mkdir(parents=True)
        (place.outer / "flag").write_text("sentinel flag\n")
        (place.outer / "etc").mkdir()
        (place.outer / "etc" / "passwd").write_text("root:x:0:0\n")
        (top / "beside").write_text("beside\n")
        return place

    def outside(self) -> dict[str, tuple[str, bytes | str | None]]:
        """Every entry under ``top`` but the workspace: its type and content (file), target (link)."""
        found: dict[str, tuple[str, bytes | str | None]] = {}
        for folder_path, folders, files in os.walk(self.top):
            here = Path(folder_path)
            if here == self.ws:
                folders.clear()
                continue
            for name in folders + files:
                path = here / name
                key = str(path.relative_to(self.top))
                if path == self.ws:
                    continue
                if path.is_symlink():
                    found[key] = ("link", os.readlink(path))
                elif path.is_dir():
                    found[key] = ("dir", None)
                else:
                    found[key] = ("file", path.read_bytes())
        return found

    def inside(self) -> dict[str, str]:
        """Every entry of the workspace and its type."""
        found: dict[str, str] = {}
        for folder_path, folders, files in os.walk(self.ws):
            for name in folders + files:
                path = Path(folder_path) / name
                kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
                found[str(path.relative_to(self.ws))] = kind
        return found

    def links_stay_inside(self, *, except_: tuple[str, ...] = ()) -> None:
        root = os.path.realpath(self.ws)
        for name, kind in self.inside().items():
            if kind == "link" and name not in except_:
                resolved = os.path.realpath(self.ws / name)
                assert os.path.commonpath([resolved, root]) == root, (name, resolved)


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return Place.make(tmp_path / "top")


def refused(place: Place, members: list[Member], match: str, limits: ArchiveLimits = LIMITS) -> ArchiveError:
    """Extract ``members`` into the workspace: it fails with ``match``, the outside as it was."""
    before = place.outside()
    archive = make_tar(place.top / "archive.tar", members)
    with pytest.raises(ArchiveError, match=match) as caught:
        extract_tar(archive, place.ws, limits)
    archive.unlink()
    assert place.outside() == before
    return caught.value


# -- names


@pytest.mark.parametrize("name", ["/abs", "/outer/flag", "//x/y", "/"])
def test_absolute_names_are_refused(place: Place, name: str) -> None:
    refused(place, [file(name)], "absolute")
    assert place.inside() == {}


@pytest.mark.parametrize(
    "name", ["../flag", "a/../../flag", "a/..", "..", "./../x", "a/b/../../../etc/passwd"]
)
def test_dotdot_names_are_refused(place: Place, name: str) -> None:
    refused(place, [file("first"), file(name)], "'..'")
    assert place.inside() == {}, "nothing is written when a member breaks a rule of the tar alone"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("x" * 256, "over 255 bytes"),
        ("é" * 128, "over 255 bytes"),  # 256 bytes of UTF-8
        ("/".join(["d" * 200] * 21), "bytes, over 4096"),
        ("/".join(["d"] * 129), "129 elements deep, over 128"),
        ("a\0b", "NUL"),
    ],
)
def test_names_over_the_limits_are_refused(place: Place, name: str, match: str) -> None:
    if "\0" in name:  # tarfile cuts a name at NUL in a ustar field: put it in a PAX record
        before = place.outside()
        with pytest.raises(ArchiveError, match=match):
            extract_tar(nul_named_tar(place.top.parent / "nul.tar"), place.ws)
        assert place.outside() == before
    else:
        refused(place, [file(name)], match)
    assert place.inside() == {}


def nul_named_tar(path: Path) -> Path:
    """A tar whose one member's name (a PAX path record) has a NUL, which tarfile keeps."""
    info = tarfile.TarInfo("a")
    info.size = 1
    info.pax_headers = {"path": "a\0b"}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    return path


# -- links


def test_a_symlink_out_then_a_file_through_it_is_refused(place: Place) -> None:
    refused(place, [symlink("link", "../etc"), file("link/passwd", b"owned")], "leads outside")
    refused(place, [symlink("link", str(place.outer / "etc")), file("link/passwd", b"owned")], "absolute")
    assert place.inside() == {}


def test_a_file_through_an_archive_symlink_is_refused_even_inside(place: Place) -> None:
    refused(place, [folder("d"), symlink("link", "d"), file("link/x")], "inside symlink member 'link'")
    refused(place, [symlink("here", "."), file("here/here/x")], "inside symlink member 'here'")
    refused(place, [symlink("d", "."), folder("d")], "a folder over symlink member")
    assert place.inside() == {}


def test_a_member_where_the_archive_has_another_kind_is_refused_before_writing(place: Place) -> None:
    refused(place, [file("a"), file("a/b")], "inside file member 'a'")
    refused(place, [file("d/x"), file("d")], "a file over folder member")
    refused(place, [folder("d"), symlink("d", ".")], "a symlink over folder member")
    assert place.inside() == {}


@pytest.mark.parametrize("target", ["a", "../flag", "/outer/flag", "ws/../../flag"])
def test_hard_links_are_refused(place: Place, target: str) -> None:
    refused(place, [file("a"), hardlink("h", target), file("h", b"owned")], "a hard link")
    assert place.inside() == {}


def test_symlink_chains_out_are_refused(place: Place) -> None:
    refused(place, [symlink("a", "b"), symlink("b", "c"), symlink("c", "..")], "'c'.*leads outside")
    refused(place, [folder("d"), symlink("d/up", ".."), symlink("x", "d/up/..")], "'..' after a name")
    refused(place, [symlink("x", "d/../../flag")], "'..' after a name")
    assert place.inside() == {}


def test_symlinks_that_stay_inside_are_extracted(place: Place) -> None:
    members = [
        folder("d"),
        folder("d/e"),
        file("d/e/f", b"f"),
        symlink("a", "b"),
        symlink("b", "d/e"),
        symlink("d/e/up", "../.."),
        symlink("d/e/self", "."),
        symlink("d/e/loop", "loop"),
        symlink("dangling", "nowhere/x"),
    ]
    archive = make_tar(place.top / "in.tar", members)
    assert extract_tar(archive, place.ws) == len(members)
    assert (place.ws / "a" / "f").read_bytes() == b"f"
    assert os.readlink(place.ws / "d" / "e" / "up") == "../.."
    place.links_stay_inside()


@pytest.mark.parametrize(
    ("target", "depth", "problem"),
    [
        ("x", 0, None),
        ("./x/./y/", 0, None),
        ("../x", 1, None),
        ("../../x", 1, "leads outside"),
        ("..", 0, "leads outside"),
        ("x/..", 3, "after a name"),
        ("/etc", 3, "absolute"),
        ("", 0, "empty"),
        ("x" * 1025, 0, "over 1024 bytes"),
    ],
)
def test_link_target_problem(target: str, depth: int, problem: str | None) -> None:
    found = link_target_problem(target, depth)
    assert found is None if problem is None else found is not None and problem in found


# -- what the workspace holds already


def test_a_symlink_in_the_workspace_is_never_followed(place: Place) -> None:
    (place.ws / "link").symlink_to(place.outer / "etc")
    (place.ws / "d").mkdir()
    (place.ws / "d" / "up").symlink_to("../..")
    error = refused(place, [file("ok", b"ok"), file("link/passwd", b"owned")], "symlink or not a folder")
    assert "'link/passwd'" in str(error)
    assert (place.ws / "ok").read_bytes() == b"ok", "members before the refused one stay extracted"
    refused(place, [file("d/up/flag", b"owned")], "'d/up' in the workspace is a symlink")
    refused(place, [folder("link")], "symlink or not a folder")
    refused(place, [folder("link/new")], "symlink or not a folder")
    assert not (place.outer / "etc" / "new").exists()


def test_a_member_replaces_a_symlink_of_its_name_instead_of_writing_through_it(place: Place) -> None:
    (place.ws / "f").symlink_to(place.outer / "flag")
    (place.ws / "g").symlink_to(place.outer / "etc")
    before = place.outside()
    archive = make_tar(place.top / "a.tar", [file("f", b"mine"), symlink("g", "f")])
    assert extract_tar(archive, place.ws) == 2
    assert place.outside() == {**before, "a.tar": ("file", archive.read_bytes())}
    assert not (place.ws / "f").is_symlink() and (place.ws / "f").read_bytes() == b"mine"
    assert os.readlink(place.ws / "g") == "f"


def test_a_member_replaces_a_hard_link_of_its_name_instead_of_writing_into_the_shared_file(
    place: Place,
) -> None:
    os.link(place.outer / "flag", place.ws / "f")  # as a step may do
    before = place.outside()
    archive = make_tar(place.top.parent / "a.tar", [file("f", b"mine")])
    assert extract_tar(archive, place.ws) == 1
    assert place.outside() == before
    assert (place.ws / "f").read_bytes() == b"mine"


def test_a_file_member_over_a_folder_fails_and_leaves_no_temporary_file(place: Place) -> None:
    (place.ws / "d").mkdir()
    refused(place, [file("d", b"x")], "cannot extract member 'd'")
    assert place.inside() == {"d": "dir"}


# -- special files and limits


def test_contiguous_files_are_regular_files(place: Place) -> None:
    archive = make_tar(place.top / "c.tar", [Member("c", tarfile.CONTTYPE, data=b"c")])
    assert extract_tar(archive, place.ws) == 1
    assert (place.ws / "c").read_bytes() == b"c"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(place: Place, kind: bytes) -> None:
    refused(place, [file("first"), Member("dev", kind)], "special file")
    assert place.inside() == {}


def test_member_count_and_size_limits(place: Place) -> None:
    many = [file(f"f{index}") for index in range(11)]
    refused(place, many, "over 10 members", ArchiveLimits(members=10))
    refused(
        place, [file("a", b"x" * 600), file("b", b"x" * 600)], "over 1000 bytes", ArchiveLimits(size=1000)
    )
    assert place.inside() == {}
    archive = make_tar(place.top / "ok.tar", many[:10])
    assert extract_tar(archive, place.ws, ArchiveLimits(members=10)) == 10


def test_a_member_claiming_more_than_the_default_size_limit_is_refused(place: Place) -> None:
    info = tarfile.TarInfo("huge")
    info.size = 9 << 30  # the header only: the data is not there
    (place.top / "huge.tar").write_bytes(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
    with pytest.raises(ArchiveError, match="over 8589934592 bytes"):
        extract_tar(place.top / "huge.tar", place.ws)
    assert place.inside() == {}


# -- the PATH_MAX trick (CVE-2025-4517)


def test_the_path_max_trick_escapes_plain_tarfile_on_this_python(place: Place) -> None:
    """The archive of the tests below really escapes tarfile's "data" filter where Python has the bug."""
    archive = make_tar(
        place.top / "trick.tar",
        path_max_members(
            place.ws, "escape", [hardlink("flaglink", "escape/flag"), file("flaglink", b"owned")]
        ),
    )
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(place.ws, filter="data")
    except (OSError, tarfile.TarError, KeyError) as exc:
        pytest.skip(f"this Python's tarfile ({sys.version.split()[0]}) refuses the trick: {exc!r}")
    if (place.outer / "flag").read_text() != "owned":
        pytest.skip(f"this Python's tarfile ({sys.version.split()[0]}) is not fooled by the trick")
    assert (place.outer / "flag").read_text() == "owned"


@pytest.mark.parametrize("payload", ["hardlink", "file", "overwrite-link"])
def test_the_path_max_trick_is_refused(place: Place, payload: str) -> None:
    members = {
        "hardlink": [hardlink("flaglink", "escape/flag"), file("flaglink", b"owned")],
        "file": [file("escape/newfile", b"new")],
        "overwrite-link": [file("escape/ws/x", b"x")],
    }[payload]
    refused(place, path_max_members(place.ws, "escape", members), "refused")
    assert place.inside() == {}, "the trick is refused before anything is written"


def deep_trick_in_workspace(place: Place) -> None:
    """The PATH_MAX structure made on disk by a step: ``ws/escape`` leads to ``outer``."""
    workspace = str(place.ws)
    component = long_component(place.ws)
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        path = ""
        for step in STEPS:
            os.mkdir(os.path.join(path, component), dir_fd=fd)
            os.symlink(component, os.path.join(path, step), dir_fd=fd)
            path = os.path.join(path, component)
        linkpath = os.path.join(*STEPS, "l" * 254)
        os.symlink(os.path.join(*[".."] * len(STEPS)), linkpath, dir_fd=fd)
        os.symlink(os.path.join(linkpath, ".."), "escape", dir_fd=fd)
    finally:
        os.close(fd)
    assert (place.ws / "escape" / "flag").read_text() == "sentinel flag\n"


@pytest.mark.parametrize(
    ("path", "match"), [("escape/flag", "symlink or not a folder|escapes"), ("escape", "after a name")]
)
def test_write_tar_never_reads_through_a_symlink_out(place: Place, path: str, match: str) -> None:
    deep_trick_in_workspace(place)
    destination = place.top / "out.tar"
    with pytest.raises(ArchiveError, match=match):
        write_tar(place.ws, [path], destination, print)
    assert not destination.exists() and not (place.top / "out.tar.partial").exists()


def test_write_tar_refuses_paths_through_symlinks_and_stores_hard_links_as_files(place: Place) -> None:
    (place.ws / "d").mkdir()
    (place.ws / "d" / "f").write_bytes(b"f")
    os.link(place.ws / "d" / "f", place.ws / "d" / "hard")
    (place.ws / "d" / "up").symlink_to("..")
    (place.ws / "via").symlink_to("d")
    with pytest.raises(ArchiveError, match="'via' in the workspace is a symlink"):
        write_tar(place.ws, ["via/f"], place.top / "x.tar", print)
    assert write_tar(place.ws, ["d", "via"], place.top / "d.tar", print) == 5
    with tarfile.open(place.top / "d.tar") as tar:
        kinds = {member.name: member.type for member in tar}
    assert kinds == {
        "d": tarfile.DIRTYPE,
        "d/f": tarfile.REGTYPE,
        "d/hard": tarfile.REGTYPE,
        "d/up": tarfile.SYMTYPE,
        "via": tarfile.SYMTYPE,
    }
    other = Place.make(place.top / "other")
    assert extract_tar(place.top / "d.tar", other.ws) == 5
    assert (other.ws / "via" / "hard").read_bytes() == b"f"
    other.links_stay_inside()


def test_write_tar_refuses_what_extraction_would_refuse(place: Place) -> None:
    for index in range(3):
        (place.ws / f"f{index}").write_bytes(b"x" * 100)
    with pytest.raises(ArchiveError, match="over 3 entries"):
        write_tar(place.ws, ["."], place.top / "x.tar", print, ArchiveLimits(members=3))
    with pytest.raises(ArchiveError, match="over 250 bytes"):
        write_tar(place.ws, ["."], place.top / "x.tar", print, ArchiveLimits(size=250))
    assert write_tar(place.ws, ["."], place.top / "x.tar", print, ArchiveLimits(members=4)) == 4


# -- random names


COMMON_PARTS = st.sampled_from(["a", "b", "link", "ws", "flag", "outer", "é", "\u2028"])
WILD_PARTS = st.one_of(
    COMMON_PARTS,
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=20),
    st.sampled_from(["..", ".", "", "-" * 256]),
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=200, max_size=300),
)
WILD_NAMES = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.integers(0, 4).map(lambda n: n == 0),
    st.lists(WILD_PARTS, min_size=1, max_size=5),
)
CLEAN_NAMES = st.lists(COMMON_PARTS, min_size=1, max_size=4).map("/".join)
NAMES = st.one_of(CLEAN_NAMES, CLEAN_NAMES, CLEAN_NAMES, WILD_NAMES)  # most archives break no rule
TARGETS = st.one_of(
    NAMES,
    st.builds(lambda ups, name: "/".join([*[".."] * ups, name]), st.integers(0, 4), NAMES),
)
MEMBERS = st.lists(
    st.one_of(
        st.builds(file, NAMES, st.binary(max_size=20)),
        st.builds(folder, NAMES),
        st.builds(symlink, NAMES, TARGETS),
        st.builds(symlink, NAMES, TARGETS),
        st.builds(hardlink, NAMES, TARGETS),
    ),
    min_size=1,
    max_size=8,
)


@given(members=MEMBERS, planted=st.booleans())
def test_random_members_never_land_outside(members: list[Member], planted: bool) -> None:
    with tempfile.TemporaryDirectory() as top:
        place = Place.make(Path(top))
        if planted:
            (place.ws / "link").symlink_to(place.outer)
        before = place.outside()
        try:
            archive = make_tar(place.top / "random.tar", members)
        except (ValueError, UnicodeError):
            return  # tarfile cannot write such a header
        before["random.tar"] = ("file", archive.read_bytes())
        with contextlib.suppress(ArchiveError):
            extract_tar(archive, place.ws)
        assert place.outside() == before
        if not planted:
            place.links_stay_inside()


# -- end to end: a cache made by one party, restored by another's task


@pytest.fixture
def runservice() -> Iterator[RunserviceStandIn]:
    standin = RunserviceStandIn().start()
    yield standin
    standin.stop()


def test_a_crafted_cache_fails_the_restore_and_writes_nothing_outside(
    runservice: RunserviceStandIn, tmp_path: Path
) -> None:
    place = Place.make(tmp_path / "top")
    data = place.top / "data"
    task_root = data / "tasks" / "t1"
    # the workspace will be data/tasks/t1/workspace: escape leads four levels above it, to "top"
    workspace = task_root / "workspace"
    escape = "escape"
    members = path_max_members(workspace, escape, [])
    members[-1] = symlink(escape, members[-1].target + "/.." * 3)
    members += [file("escape/beside", b"owned"), file("escape/data/tasks/t1/logs/steps/0.log", b"forged")]
    archive = make_tar(tmp_path / "cache.tar", members)
    runservice.caches["projects/p1"] = {"k": archive.read_bytes()}
    before = place.outside()
    task = ExecutorTask(
        id="t1",
        run_id="run-1",
        executor_id="ex-1",
        task_name="restore",
        steps=[Step(StepKind.RESTORE_CACHE, keys=["k"]), Step(StepKind.RUN, command="echo never")],
        cache_group="projects/p1",
    )
    runservice.add_task(task)
    executor = Executor(runservice.url, data, executor_id="ex-1", interval=0.05).start()
    try:
        finished = runservice.wait_finished("t1", timeout=20.0)
    finally:
        executor.stop()
    assert finished.phase is ExecutorTaskPhase.FAILED
    log = (task_root / "logs" / "steps" / "0.log").read_text()
    assert "refused" in log and "forged" not in log
    assert (place.top / "beside").read_text() == "beside\n"
    after = {key: value for key, value in place.outside().items() if not key.startswith("data")}
    assert after == {key: value for key, value in before.items() if not key.startswith("data")}
