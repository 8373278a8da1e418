"""An executor's files for one task, and the tars it saves and extracts.

Layout under ``<data dir>/tasks/<task id>/``: ``workspace/`` (where steps run),
``logs/setup.log``, ``logs/steps/<n>.log``, ``archives/<n>.tar`` (save-to-workspace
steps) and ``tmp/`` (downloads and caches being made).
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import attrs

from runstore.ids import check_id


class ArchiveError(Exception):
    """A tar cannot be made or extracted; the message says why, for a step's log."""


@attrs.frozen
class TaskFiles:
    """Where one task's workspace, logs and archives are."""

    root: Path

    @classmethod
    def of(cls, tasks_dir: Path, task_id: str) -> TaskFiles:
        """The files of ``task_id`` (an ``InvalidIdError`` if it is no id) under ``tasks_dir``."""
        return cls(tasks_dir / check_id("task id", task_id))

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def setup_log(self) -> Path:
        return self.root / "logs" / "setup.log"

    def step_log(self, step: int) -> Path:
        return self.root / "logs" / "steps" / f"{step}.log"

    def archive(self, step: int) -> Path:
        return self.root / "archives" / f"{step}.tar"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def create(self) -> None:
        """Make the task's folders."""
        for folder in (self.workspace, self.step_log(0).parent, self.archive(0).parent, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)


def workspace_path(workspace: Path, path: str) -> str:
    """``path`` normalized lexically (``a/../b`` is ``b``), if it names something inside ``workspace``.

    An absolute path, a path with ".." leading out, and a path whose symlinks lead out
    raise ``ArchiveError``.
    """
    if not path:
        raise ArchiveError("an empty path names nothing in the workspace")
    if "\0" in path:
        raise ArchiveError(f"path {path!r} has a NUL character")
    if PurePosixPath(path).is_absolute():
        raise ArchiveError(f"path {path!r} is absolute: paths are relative to the workspace")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise ArchiveError(f"path {path!r} escapes the workspace")
    root = workspace.resolve()
    resolved = (root / normal).resolve()
    if resolved != root and root not in resolved.parents:
        raise ArchiveError(f"path {path!r} escapes the workspace (through a symlink, to {resolved})")
    return normal


def write_tar(workspace: Path, paths: list[str], destination: Path, note: Callable[[str], None]) -> int:
    """Tar ``paths`` of ``workspace`` (recursively) into ``destination``; the member count.

    Every path is checked first. Devices and FIFOs are skipped, each with a ``note``
    (sockets too, silently, as tarfile does); a member that extraction's "data" filter
    would refuse (a link out of the workspace) fails the whole tar. ``destination``
    appears complete or not at all.
    """
    normals = [workspace_path(workspace, path) for path in paths]
    for path, normal in zip(paths, normals, strict=True):
        if not os.path.lexists(workspace / normal):
            raise ArchiveError(f"path {path!r} does not exist in the workspace")
    count = 0

    def admit(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal count
        if member.ischr() or member.isblk() or member.isfifo():
            note(f"skipped {member.name}: not a file, folder or link")
            return None
        if _DATA_FILTER is not None:
            try:
                _DATA_FILTER(member, str(workspace))
            except tarfile.FilterError as exc:
                raise ArchiveError(f"cannot archive {member.name}: {exc}") from exc
        count += 1
        return member

    partial = destination.with_name(destination.name + ".partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for normal in normals:
                tar.add(workspace / normal, arcname=normal, filter=admit)
        os.replace(partial, destination)
    except OSError as exc:
        raise ArchiveError(f"cannot write {destination.name}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return count


def extract_tar(archive: Path, workspace: Path) -> int:
    """Extract ``archive`` into ``workspace`` with tarfile's "data" filter; the member count."""
    if _DATA_FILTER is None:
        raise ArchiveError(
            "this Python's tarfile has no 'data' filter (3.10.12 or 3.11.4 needed): not extracting"
        )
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            tar.extractall(workspace, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"cannot extract the archive: {exc}") from exc
    return len(members)


_DATA_FILTER: Callable[[tarfile.TarInfo, str], tarfile.TarInfo] | None = getattr(tarfile, "data_filter", None)
