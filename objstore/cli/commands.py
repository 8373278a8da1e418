"""The subcommands of ``objstore``: each takes its parsed arguments and the stores, and
returns its exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from ..errors import NotExistError
from ..info import CommonPrefix, ObjectInfo
from ..s3 import S3Storage
from .failures import FAILED, CommandError, UsageError, naming
from .locations import LocalLocation, Location, StoreLocation, Stores
from .progress import Progress
from .transfer import Entry, child, copy_object, differs, entries, read_chunks

#: How many keys one batched delete takes (S3's limit per request).
DELETE_BATCH = 1000

Command = Callable[[argparse.Namespace, Stores], int]


# -- reading ---------------------------------------------------------------------------


def ls(args: argparse.Namespace, stores: Stores) -> int:
    """List the objects (and, unless recursive, the levels) under a prefix."""
    where = stores.store_location(args.url)
    with naming(where.url()):
        for entry in where.store.list(where.key, recursive=args.recursive):
            if args.json:
                print(json.dumps(_entry_data(entry)))
            elif not args.long:
                print(entry.key)
            elif isinstance(entry, CommonPrefix):
                print(f"{'':19}  {'PRE':>12}  {'':34}  {entry.key}")
            else:
                time = entry.last_modified.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{time}  {entry.size:>12}  {entry.etag:34}  {entry.key}")
    return 0


def _entry_data(entry: ObjectInfo | CommonPrefix) -> dict[str, Any]:
    if isinstance(entry, CommonPrefix):
        return {"prefix": entry.key}
    data: dict[str, Any] = {
        "key": entry.key,
        "size": entry.size,
        "last_modified": entry.last_modified.isoformat(),
        "etag": entry.etag,
    }
    if entry.content_type is not None:
        data["content_type"] = entry.content_type
    if entry.metadata is not None:
        data["metadata"] = dict(entry.metadata)
    return data


def stat(args: argparse.Namespace, stores: Stores) -> int:
    """Describe one object."""
    where = _object(stores.store_location(args.url))
    with naming(where.url()):
        data = _entry_data(where.store.stat(where.key))
    if args.json:
        print(json.dumps(data))
        return 0
    for name, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "(none)"
        print(f"{name.replace('_', ' ') + ':':15} {value}")
    return 0


def cat(args: argparse.Namespace, stores: Stores) -> int:
    """Write an object, or a range of it, to stdout."""
    where = _object(stores.store_location(args.url))
    out = sys.stdout.buffer
    with naming(where.url()):
        info = where.store.stat(where.key)
        start, end = (0, None) if args.range is None else args.range.bounds(info.size)
        for chunk in read_chunks(where, info, None, start, end):
            out.write(chunk)
    out.flush()
    return 0


def presign(args: argparse.Namespace, stores: Stores) -> int:
    """Print a URL that GETs or PUTs one object without credentials."""
    where = _object(stores.store_location(args.url))
    if not isinstance(where.store, S3Storage):
        raise CommandError(where.url(), "only an s3:// object has a presigned URL")
    with naming(where.url()):
        print(where.store.presign(where.key, args.method, timedelta(seconds=args.expires)))
    return 0


def _object(where: StoreLocation) -> StoreLocation:
    """``where``, if it names one object rather than a prefix."""
    if where.is_prefix:
        raise CommandError(where.url(), "names a prefix, not an object")
    return where


# -- copying ---------------------------------------------------------------------------


def cp(args: argparse.Namespace, stores: Stores) -> int:
    """Copy an object or file, or (recursive) every one under a prefix or folder."""
    src, dst = _ends(args, stores)
    if args.recursive:
        with naming(src.url()):
            found = entries(src)
        return _transfer(list(found.items()), dst, args)
    if isinstance(src, StoreLocation):
        _object(src)
    elif not src.is_stdio and os.path.isdir(src.path):
        raise CommandError(src.path, "is a folder: cp --recursive copies what is in it")
    dst = _into(dst, _basename(src))
    name = f"{src.url()} -> {dst.url()}"
    quiet = args.quiet or (isinstance(dst, LocalLocation) and dst.is_stdio)
    with naming(name):
        info, total = None, None
        if isinstance(src, StoreLocation):
            info = src.store.stat(src.key)
            total = info.size
        elif not src.is_stdio:
            total = os.stat(src.path).st_size
        with Progress(quiet=quiet, total=total) as progress:
            verb = copy_object(src, dst, progress, no_clobber=args.no_clobber, info=info)
            progress.done(f"{verb}: {name}")
    return 0


def sync(args: argparse.Namespace, stores: Stores) -> int:
    """Copy what the destination lacks or holds otherwise; with ``--delete``, delete what the
    source lacks."""
    src, dst = _ends(args, stores)
    with naming(src.url()):
        source = entries(src)
    with naming(dst.url()):
        exists = isinstance(dst, StoreLocation) or os.path.isdir(dst.path)
        target = entries(dst) if exists else {}
        todo = [
            (key, entry) for key, entry in source.items() if key not in target or differs(entry, target[key])
        ]
    gone = [entry for key, entry in target.items() if key not in source] if args.delete else []
    if args.dry_run:
        for key, entry in todo:
            print(f"(dry run) {_verb(entry.location, dst)}: {entry.location.url()} -> {_below(dst, key)}")
        for entry in gone:
            print(f"(dry run) delete: {entry.location.url()}")
        return 0
    status = _transfer(todo, dst, args)
    return _delete_entries(gone, args.quiet) or status


def _ends(args: argparse.Namespace, stores: Stores) -> tuple[Location, Location]:
    src = stores.location(args.source, local=True)
    dst = stores.location(args.destination, local=True, create=True)
    if isinstance(src, LocalLocation) and isinstance(dst, LocalLocation):
        raise UsageError(f"{args.command} copies to or from a store: s3://... or file://... on one side")
    recursive = getattr(args, "recursive", True)
    if recursive and any(isinstance(end, LocalLocation) and end.is_stdio for end in (src, dst)):
        raise UsageError(f"{args.command} of a prefix or folder cannot use '-' (stdin or stdout)")
    return src, dst


def _basename(src: Location) -> str:
    """The name a copy of ``src`` takes inside a prefix or folder ("" for stdin: none)."""
    if isinstance(src, StoreLocation):
        return src.key.rsplit("/", 1)[-1]
    return "" if src.is_stdio else os.path.basename(src.path)


def _into(dst: Location, name: str) -> Location:
    """``dst``, or ``name`` inside it where it is a prefix or a folder."""
    if isinstance(dst, StoreLocation):
        into = dst.is_prefix
    else:
        into = not dst.is_stdio and (dst.path.endswith(os.sep) or os.path.isdir(dst.path))
    if not into:
        return dst
    if not name:
        raise UsageError(f"stdin has no name to take inside {dst.url()}: give the whole destination")
    if isinstance(dst, StoreLocation):
        return dst.at(dst.key + name)
    return LocalLocation(os.path.join(dst.path, name))


def _below(folder: Location, key: str) -> str:
    """How to name the key ``key`` under a folder location, valid or not."""
    if isinstance(folder, StoreLocation):
        return folder.url(folder.folder() + key)
    return os.path.join(folder.path, key)


def _verb(src: Location, dst: Location) -> str:
    if isinstance(src, LocalLocation):
        return "upload"
    return "download" if isinstance(dst, LocalLocation) else "copy"


def _transfer(found: list[tuple[str, Entry]], dst: Location, args: argparse.Namespace) -> int:
    """Copy each entry to its key under the folder ``dst``, ``args.jobs`` at a time; each
    failure is said, and the others go on."""
    no_clobber = getattr(args, "no_clobber", False)
    with Progress(quiet=args.quiet, total=sum(entry.size for _, entry in found)) as progress:

        def copy(item: tuple[str, Entry]) -> bool:
            key, entry = item
            name = f"{entry.location.url()} -> {_below(dst, key)}"
            try:
                with naming(name):
                    target = child(dst, key)
                    name = f"{entry.location.url()} -> {target.url()}"
                    verb = copy_object(
                        entry.location, target, progress, no_clobber=no_clobber, info=entry.info
                    )
            except CommandError as exc:
                progress.failed(f"objstore: {exc}")
                return False
            progress.done(f"{verb}: {name}")
            return True

        pool = ThreadPoolExecutor(max_workers=args.jobs)
        try:
            copied = list(pool.map(copy, found))
        finally:
            pool.shutdown(cancel_futures=True)
    return 0 if all(copied) else FAILED


# -- deleting --------------------------------------------------------------------------


def rm(args: argparse.Namespace, stores: Stores) -> int:
    """Delete an object, or (recursive, once confirmed) every object under a prefix."""
    where = stores.store_location(args.url)
    if not args.recursive:
        if where.is_prefix:
            raise CommandError(where.url(), "names a prefix: rm --recursive deletes what is under it")
        with naming(where.url()):
            if not where.store.exists(where.key):
                raise NotExistError(where.key)
            where.store.delete(where.key)
        if not args.quiet:
            print(f"delete: {where.url()}")
        return 0
    prefix = where.folder()
    with naming(where.url(prefix)):
        found = entries(where.at(prefix))
    if not found:
        print(f"objstore: nothing under {where.url(prefix)}", file=sys.stderr)
        return 0
    if not args.yes:
        _confirm(f"delete {len(found)} object(s) under {where.url(prefix)}?", where.url(prefix))
    return _delete_entries(list(found.values()), args.quiet)


def _confirm(question: str, name: str) -> None:
    if not sys.stdin.isatty():
        raise CommandError(name, "not deleted: confirm on a terminal, or pass --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError(name, "not deleted: not confirmed")


def _delete_entries(doomed: list[Entry], quiet: bool) -> int:
    """Delete these objects (in batches) or files; each failure is said."""
    status = 0
    stores = [entry.location for entry in doomed if isinstance(entry.location, StoreLocation)]
    for first in range(0, len(stores), DELETE_BATCH):
        batch = stores[first : first + DELETE_BATCH]
        try:
            with naming(batch[0].url()):
                batch[0].store.delete_many(where.key for where in batch)
        except CommandError as exc:
            print(f"objstore: {exc}", file=sys.stderr)
            status = FAILED
            continue
        for where in batch:
            _said(quiet, f"delete: {where.url()}")
    for entry in doomed:
        if isinstance(entry.location, LocalLocation):
            try:
                with naming(entry.location.path):
                    os.unlink(entry.location.path)
            except CommandError as exc:
                print(f"objstore: {exc}", file=sys.stderr)
                status = FAILED
                continue
            _said(quiet, f"delete: {entry.location.path}")
    return status


def _said(quiet: bool, line: str) -> None:
    if not quiet:
        print(line)
