"""A server's listen address on its command line: ``--listen HOST:PORT``."""

from __future__ import annotations

import argparse


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as a server's listen address (port 0: a free one)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def add_listen_argument(parser: argparse.ArgumentParser, port: int) -> None:
    """A command line's ``--listen HOST:PORT`` (default ``127.0.0.1:<port>``), as ``args.listen``."""
    parser.add_argument(
        "--listen",
        type=listen_address,
        default=("127.0.0.1", port),
        metavar="HOST:PORT",
        help=f"where to listen (127.0.0.1:{port}; port 0: a free one)",
    )
