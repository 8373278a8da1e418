"""An executor's files for one task, and the tars it saves and extracts.

Layout under ``<data dir>/tasks/<task id>/`` (mode 0711, the executor's): ``workspace/``
(where steps run; 0700, the task user's), ``logs/setup.log``, ``logs/steps/<n>.log``,
``archives/<n>.tar`` (save-to-workspace steps) and ``tmp/`` (downloads and caches being
made); ``logs``, ``archives`` and ``tmp`` are 0700 and the executor's, so a task user can
neither read nor replace them (docs/runservice.md, "Task isolation").

Tars are read and written by this module's own checks, not by tarfile's extraction
filters: every file is opened relative to a folder descriptor of the workspace, without
following symlinks (docs/runservice.md, "Workspace archives and caches").
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import attrs

from runstore.ids import check_id

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)


class ArchiveError(Exception):
    """A tar cannot be made or extracted; the message says why, for a step's log."""


@attrs.frozen
class ArchiveLimits:
    """Bounds on one tar, checked when it is written and when it is extracted."""

    members: int = 200_000  # entries of any type
    size: int = 8 << 30  # bytes of all regular files together
    name: int = 4096  # bytes of a member's name (UTF-8)
    component: int = 255  # bytes of one element of a name
    depth: int = 128  # elements of a name
    link: int = 1024  # bytes of a symlink's target


LIMITS = ArchiveLimits()


@attrs.frozen
class TaskUser:
    """The user a task's steps run as: uid ``uid``, the gid of the same number, no other groups."""

    uid: int

    @property
    def gid(self) -> int:
        return self.uid


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

    def create(self, user: TaskUser | None = None) -> None:
        """Make the task's folders with the modes of the layout, the workspace owned by ``user`` if given.

        Folders that exist are kept (their mode and owner set); none is entered through a symlink.
        """
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root, 0o700)
        root = os.open(self.root, _DIR_FLAGS)
        try:
            os.fchmod(root, 0o711)
            for parts in (("logs",), ("logs", "steps"), ("archives",), ("tmp",)):
                os.close(_private_folder(root, parts, None))
            os.close(_private_folder(root, ("workspace",), user))
        finally:
            os.close(root)


def _private_folder(root: int, parts: tuple[str, ...], user: TaskUser | None) -> int:
    """A descriptor of folder ``parts`` under ``root``, made if missing, 0700, ``user``'s if given."""
    current = os.dup(root)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=current)
            inner = os.open(part, _DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = inner
        if user is not None:
            os.fchown(current, user.uid, user.gid)
        os.fchmod(current, 0o700)
    except BaseException:
        os.close(current)
        raise
    return current


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
        # not where it leads: the executor, root, may see where the task may not
        raise ArchiveError(f"path {path!r} escapes the workspace (through a symlink)")
    return normal


def member_parts(name: str, limits: ArchiveLimits = LIMITS) -> tuple[str, ...]:
    """The elements of member ``name`` under the workspace ("" and "." dropped; ``()`` is the workspace).

    A name that is absolute, has a ".." element or a NUL, cannot be encoded, or breaks
    ``limits`` raises ``ArchiveError``.
    """
    if "\0" in name:
        raise ArchiveError(f"member {name!r} refused: its name has a NUL character")
    if name.startswith("/"):
        raise ArchiveError(f"member {name!r} refused: its name is absolute")
    size = _encoded_size(name, "member", name)
    if size > limits.name:
        raise ArchiveError(f"member {name[:100]!r}... refused: its name has {size} bytes, over {limits.name}")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"member {name!r} refused: a '..' element would lead outside the destination")
    if len(parts) > limits.depth:
        raise ArchiveError(
            f"member {name[:100]!r}... refused: {len(parts)} elements deep, over {limits.depth}"
        )
    for part in parts:
        if _encoded_size(part, "member", name) > limits.component:
            raise ArchiveError(
                f"member {name[:100]!r} refused: an element of its name is over {limits.component} bytes"
            )
    return parts


def link_target_problem(target: str, depth: int, limits: ArchiveLimits = LIMITS) -> str | None:
    """Why a symlink to ``target``, ``depth`` folders below the workspace, may lead out; None if not.

    A target is accepted if it is relative and its ".." elements all come first, no more of
    them than ``depth``: it then names a place inside without passing through a symlink
    it could climb out of.
    """
    if not target:
        return "its target is empty"
    if "\0" in target:
        return "its target has a NUL character"
    if target.startswith("/"):
        return f"its target {target!r} is absolute"
    if _encoded_size(target, "symlink target", target) > limits.link:
        return f"its target has over {limits.link} bytes"
    ups = 0
    named = False
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            named = True
        elif named:
            return f"its target {target!r} has '..' after a name, which could climb out through a symlink"
        else:
            ups += 1
    if ups > depth:
        return f"its target {target!r} leads outside the destination"
    return None


def write_tar(
    workspace: Path,
    paths: list[str],
    destination: Path,
    note: Callable[[str], None],
    limits: ArchiveLimits = LIMITS,
    *,
    owner: TaskUser | None = None,
) -> int:
    """Tar ``paths`` of ``workspace`` (recursively) into ``destination``; the member count.

    Every path is checked first. Nothing is read through a symlink: a symlink is stored as
    one, and fails the whole tar if ``link_target_problem`` finds its target may lead out;
    a path through a symlink fails too. Hard-linked files are stored as separate files.
    Devices and FIFOs are skipped, each with a ``note`` (sockets too, silently). A tar
    that extraction would refuse by ``limits`` fails, and so does, with ``owner``, an
    entry whose uid is not ``owner``'s (a hard link to, or a move of, another user's file
    would otherwise be read with the executor's rights). ``destination`` appears complete
    or not at all.
    """
    normals = [workspace_path(workspace, path) for path in paths]
    for path, normal in zip(paths, normals, strict=True):
        if not os.path.lexists(workspace / normal):
            raise ArchiveError(f"path {path!r} does not exist in the workspace")
    partial = destination.with_name(destination.name + ".partial")
    try:
        with contextlib.ExitStack() as stack:
            root = os.open(workspace, _DIR_FLAGS)
            stack.callback(os.close, root)
            tar = stack.enter_context(tarfile.open(partial, "w", format=tarfile.PAX_FORMAT))
            writer = _Writer(tar, note, limits, None if owner is None else owner.uid)
            for path, normal in zip(paths, normals, strict=True):
                parts = member_parts(normal, limits)
                with _walk(root, parts[:-1], create=False, what=f"path {path!r}") as parent:
                    if parts:
                        writer.add(parent, parts[-1], normal)
                    else:
                        writer.add_folder(os.dup(parent), normal)
        os.replace(partial, destination)
    except OSError as exc:
        raise ArchiveError(f"cannot write {destination.name}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return writer.count


@attrs.define
class _Writer:
    tar: tarfile.TarFile
    note: Callable[[str], None]
    limits: ArchiveLimits
    owner: int | None  # the uid every entry must have, if any
    count: int = 0
    size: int = 0

    def add(self, parent: int, name: str, arcname: str) -> None:
        """Add entry ``name`` of folder ``parent`` as ``arcname``, folders recursively."""
        parts = member_parts(arcname, self.limits)
        try:
            status = os.stat(name, dir_fd=parent, follow_symlinks=False)
            self._check_owner(arcname, status)  # before anything is opened
            if stat.S_ISDIR(status.st_mode):
                self.add_folder(os.open(name, _DIR_FLAGS, dir_fd=parent), arcname)
            elif stat.S_ISREG(status.st_mode):
                self._add_file(parent, name, arcname)
            elif stat.S_ISLNK(status.st_mode):
                target = os.readlink(name, dir_fd=parent)
                problem = link_target_problem(target, len(parts) - 1, self.limits)
                if problem is not None:
                    raise ArchiveError(f"cannot archive {arcname}: a symlink, {problem}")
                info = self._info(arcname, status, tarfile.SYMTYPE)
                info.linkname = target
                self.tar.addfile(info)
            elif (
                stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode) or stat.S_ISFIFO(status.st_mode)
            ):
                self.note(f"skipped {arcname}: not a file, folder or link")
        except OSError as exc:
            raise ArchiveError(f"cannot archive {arcname}: {exc}") from exc

    def add_folder(self, folder: int, arcname: str) -> None:
        """Add the folder open as ``folder`` (closed here) and what it holds."""
        try:
            self.tar.addfile(self._info(arcname, os.fstat(folder), tarfile.DIRTYPE))
            for name in sorted(os.listdir(folder)):
                self.add(folder, name, f"{arcname}/{name}")
        finally:
            os.close(folder)

    def _add_file(self, parent: int, name: str, arcname: str) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=parent)
        with os.fdopen(fd, "rb") as file:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise ArchiveError(f"cannot archive {arcname}: it changed while being archived")
            self.size += status.st_size
            if self.size > self.limits.size:
                raise ArchiveError(
                    f"cannot archive {arcname}: the files come to over {self.limits.size} bytes"
                )
            info = self._info(arcname, status, tarfile.REGTYPE)
            info.size = status.st_size
            self.tar.addfile(info, file)

    def _check_owner(self, arcname: str, status: os.stat_result) -> None:
        if self.owner is not None and status.st_uid != self.owner:
            raise ArchiveError(
                f"cannot archive {arcname}: it is uid {status.st_uid}'s, not the task's ({self.owner})"
            )

    def _info(self, arcname: str, status: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        self._check_owner(arcname, status)
        self.count += 1
        if self.count > self.limits.members:
            raise ArchiveError(f"cannot archive {arcname}: over {self.limits.members} entries")
        info = tarfile.TarInfo(arcname)
        info.type = kind
        info.mode = stat.S_IMODE(status.st_mode)
        info.mtime = int(status.st_mtime)
        info.uid, info.gid = status.st_uid, status.st_gid
        return info


def extract_tar(
    archive: Path, workspace: Path, limits: ArchiveLimits = LIMITS, *, owner: TaskUser | None = None
) -> int:
    """Extract ``archive`` into ``workspace``; the member count.

    Only regular files, folders and symlinks that ``link_target_problem`` accepts are
    extracted, under names ``member_parts`` accepts, within ``limits``; every member is
    checked before anything is written. Writing never follows a symlink: a member inside a
    symlink (of the archive or already in the workspace) is refused, a file or symlink
    member replaces a file or symlink of its name. What extraction makes (files, symlinks,
    folders) is ``owner``'s if given, changed through its descriptor (a symlink: by name,
    not followed). A refusal raises ``ArchiveError`` naming the member and the rule;
    members before it stay extracted, each complete.
    """
    try:
        with contextlib.ExitStack() as stack:
            tar = stack.enter_context(tarfile.open(archive, "r:"))
            members = _checked_members(tar, limits)
            root = os.open(workspace, _DIR_FLAGS)
            stack.callback(os.close, root)
            for member, parts in members:
                _extract_member(tar, root, member, parts, owner)
    except tarfile.TarError as exc:
        raise ArchiveError(f"cannot extract the archive: {exc}") from exc
    except OSError as exc:
        raise ArchiveError(f"cannot extract the archive: {exc}") from exc
    return len(members)


def _checked_members(
    tar: tarfile.TarFile, limits: ArchiveLimits
) -> list[tuple[tarfile.TarInfo, tuple[str, ...]]]:
    """The members of ``tar`` with their name elements, if all of them may be extracted."""
    members: list[tuple[tarfile.TarInfo, tuple[str, ...]]] = []
    kinds: dict[tuple[str, ...], str] = {}  # what the archive puts at a name: folder, file, symlink
    size = 0
    for member in tar:
        if len(members) >= limits.members:
            raise ArchiveError(
                f"member {member.name!r} refused: the archive has over {limits.members} members"
            )
        parts = member_parts(member.name, limits)
        if not parts and not member.isdir():
            raise ArchiveError(f"member {member.name!r} refused: it names the workspace itself")
        for end in range(1, len(parts)):
            above = kinds.setdefault(parts[:end], "folder")
            if above != "folder":
                raise ArchiveError(
                    f"member {member.name!r} refused: it is inside {above} member "
                    f"{'/'.join(parts[:end])!r}, and extraction never follows symlinks"
                )
        if member.isfile():
            size += member.size
            if size > limits.size:
                raise ArchiveError(
                    f"member {member.name!r} refused: the files come to over {limits.size} bytes"
                )
            kind = "file"
        elif member.issym():
            problem = link_target_problem(member.linkname, len(parts) - 1, limits)
            if problem is not None:
                raise ArchiveError(f"member {member.name!r} refused: a symlink, {problem}")
            kind = "symlink"
        elif member.isdir():
            kind = "folder"
        else:
            what = "a hard link" if member.islnk() else "a device, FIFO or other special file"
            raise ArchiveError(
                f"member {member.name!r} refused: {what}; only files, folders and symlinks are extracted"
            )
        before = kinds.get(parts, kind)
        if parts and (before == "folder") != (kind == "folder"):
            raise ArchiveError(f"member {member.name!r} refused: a {kind} over {before} member of that name")
        kinds[parts] = kind
        members.append((member, parts))
    return members


def _extract_member(
    tar: tarfile.TarFile,
    root: int,
    member: tarfile.TarInfo,
    parts: tuple[str, ...],
    owner: TaskUser | None,
) -> None:
    what = f"member {member.name!r}"
    folder = parts if member.isdir() else parts[:-1]
    with _walk(root, folder, create=True, what=what, owner=owner) as parent:
        if member.isdir():
            return
        name = parts[-1]
        temporary = f".extracting-{secrets.token_hex(8)}"
        try:
            if member.issym():
                os.symlink(member.linkname, temporary, dir_fd=parent)
                if owner is not None:
                    os.chown(temporary, owner.uid, owner.gid, dir_fd=parent, follow_symlinks=False)
            else:
                _write_file(tar, member, parent, temporary, owner)
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            if isinstance(exc, OSError):
                raise ArchiveError(f"cannot extract {what}: {exc.strerror}") from exc
            raise


def _write_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, temporary: str, owner: TaskUser | None
) -> None:
    mode = stat.S_IMODE(member.mode) & 0o755
    mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    source = tar.extractfile(member)
    if source is None:
        raise ArchiveError(f"member {member.name!r} refused: its data cannot be read")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with source, os.fdopen(os.open(temporary, flags, 0o600, dir_fd=parent), "wb") as target:
        left = member.size
        while left > 0:
            chunk = source.read(min(left, _CHUNK))
            if not chunk:
                raise ArchiveError(f"member {member.name!r} refused: its data ends early")
            target.write(chunk)
            left -= len(chunk)
        target.flush()
        if owner is not None:
            os.fchown(target.fileno(), owner.uid, owner.gid)
        os.fchmod(target.fileno(), mode)
        with contextlib.suppress(OverflowError, ValueError):
            os.utime(target.fileno(), (member.mtime, member.mtime))


@contextlib.contextmanager
def _walk(
    root: int, parts: tuple[str, ...], *, create: bool, what: str, owner: TaskUser | None = None
) -> Iterator[int]:
    """A descriptor of folder ``parts`` under ``root``, entered one element at a time, no symlink followed.

    With ``create``, missing folders are made, ``owner``'s if given.
    """
    current = os.dup(root)
    try:
        for index, part in enumerate(parts):
            try:
                made = False
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=current)
                        made = True
                inner = os.open(part, _DIR_FLAGS, dir_fd=current)
                if made and owner is not None:
                    try:
                        os.fchown(inner, owner.uid, owner.gid)
                    except BaseException:
                        os.close(inner)
                        raise
            except OSError as exc:
                shown = "/".join(parts[: index + 1])
                if exc.errno in _NOT_A_FOLDER:
                    raise ArchiveError(
                        f"{what} refused: {shown!r} in the workspace is a symlink or not a folder, "
                        "and symlinks are never followed"
                    ) from exc
                if exc.errno == errno.ENOENT and not create:
                    raise ArchiveError(
                        f"{what} does not exist in the workspace ({shown!r} is missing)"
                    ) from exc
                raise ArchiveError(f"{what}: cannot open {shown!r}: {exc.strerror}") from exc
            os.close(current)
            current = inner
        yield current
    finally:
        os.close(current)


def _encoded_size(text: str, kind: str, name: str) -> int:
    try:
        return len(os.fsencode(text))
    except UnicodeEncodeError as exc:
        raise ArchiveError(f"{kind} {name!r} refused: its name cannot be encoded as a file name") from exc
