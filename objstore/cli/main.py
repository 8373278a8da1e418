"""``objstore``: list, read, copy, sync and delete objects of any store from the command line.

Exit codes: 0 success, 1 a failure the user can fix (one line naming the object and the
cause), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import commands
from .arguments import MAX_EXPIRY, byte_range, expiry, positive_int
from .demo import demo
from .failures import FAILED, USAGE, CommandError, UsageError, naming
from .locations import Stores

DEFAULT_JOBS = 8

_EPILOG = """\
locations: s3://bucket/key (settings from the AWS_* variables, or ?endpoint=...&region=...),
file:///path/key (the key of the posix store at the first folder down the path holding one),
and, for cp and sync, local paths ('-' is stdin or stdout).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="objstore",
        description="List, read, copy, sync and delete objects in S3 and posix stores.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", help="list the objects under a prefix")
    ls.add_argument("url", help="s3://bucket/prefix or file:///path/prefix")
    ls.add_argument("-r", "--recursive", action="store_true", help="every key, not one level")
    ls.add_argument("-l", "--long", action="store_true", help="with time, size and etag")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    ls.set_defaults(run=commands.ls)

    stat = sub.add_parser("stat", help="describe one object")
    stat.add_argument("url")
    stat.add_argument("--json", action="store_true", help="as one JSON object")
    stat.set_defaults(run=commands.stat)

    cat = sub.add_parser("cat", help="write an object to stdout")
    cat.add_argument("url")
    cat.add_argument(
        "--range", type=byte_range, metavar="RANGE", help="bytes FIRST-LAST (inclusive), FIRST- or -COUNT"
    )
    cat.set_defaults(run=commands.cat)

    transfer = argparse.ArgumentParser(add_help=False)
    transfer.add_argument("source")
    transfer.add_argument("destination")
    transfer.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no line per object")
    transfer.add_argument(
        "-j", "--jobs", type=positive_int, default=DEFAULT_JOBS, help=f"objects at a time ({DEFAULT_JOBS})"
    )

    cp = sub.add_parser("cp", parents=[transfer], help="copy objects: local <-> store, store <-> store")
    cp.add_argument("-r", "--recursive", action="store_true", help="everything under a prefix or folder")
    cp.add_argument(
        "-n", "--no-clobber", action="store_true", help="only where the destination is missing (atomically)"
    )
    cp.set_defaults(run=commands.cp)

    sync = sub.add_parser(
        "sync", parents=[transfer], help="copy what is missing or different (by size, MD5 or time)"
    )
    sync.add_argument("--delete", action="store_true", help="also delete what the source lacks")
    sync.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    sync.set_defaults(run=commands.sync)

    rm = sub.add_parser("rm", help="delete an object, or everything under a prefix")
    rm.add_argument("url")
    rm.add_argument("-r", "--recursive", action="store_true", help="every object under the prefix")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask before a recursive delete")
    rm.add_argument("-q", "--quiet", action="store_true", help="no line per object")
    rm.set_defaults(run=commands.rm)

    presign = sub.add_parser("presign", help="print a URL that reads or writes an S3 object without keys")
    presign.add_argument("url", help="s3://bucket/key")
    presign.add_argument("--method", choices=["GET", "PUT"], default="GET")
    presign.add_argument(
        "--expires", type=expiry, default=3600, help=f"seconds, up to {MAX_EXPIRY} (default 3600)"
    )
    presign.set_defaults(run=commands.presign)

    demo_parser = sub.add_parser("demo", help="write, list and read back objects in a local posix store")
    demo_parser.add_argument("path", nargs="?", default="./objstore-data", help="(default ./objstore-data)")
    demo_parser.set_defaults(run=_demo)
    for command in sub.choices.values():
        command.set_defaults(parser=command)  # whose usage a usage error shows
    return parser


def _demo(args: argparse.Namespace, stores: Stores) -> int:
    with naming(args.path):
        demo(args.path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stores = Stores()
    try:
        code: int = args.run(args, stores)
        return code
    except UsageError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"objstore: error: {exc}", file=sys.stderr)
        return USAGE
    except CommandError as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("objstore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return FAILED
    finally:
        stores.close()
