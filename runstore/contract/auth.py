"""Who may call what: roles, the tokens that prove them, and how tokens are read.

Every route of the runservice and of the executor names the :class:`Role` it serves
(:mod:`runstore.contract.routes`); a request proves its caller's role with a bearer
token (``Authorization: Bearer <token>``) that the server's :class:`TokenBook` knows.
Tokens are compared in constant time, and never logged.

A tokens file has one token a line, as ``<role> <name> <token>`` (``#`` starts a
comment): ``executor <executor id> <token>``, ``client <name> <token>``, ``runservice
<name> <token>``. An executor token is that executor's alone: it may act only as that
executor. A file with several tokens of one role and name lets a token be rotated: add
the new one, move the callers to it, remove the old one.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

import attrs

from runstore.errors import InvalidIdError
from runstore.ids import check_id

log = logging.getLogger(__name__)

BEARER = "Bearer "
MIN_TOKEN_CHARS = 16
"""The shortest token accepted: a guessable one is refused when it is read."""


class Role(enum.Enum):
    """What a caller is."""

    EXECUTOR = "executor"  # an executor: its own record, tasks, reports, archives and caches
    CLIENT = "client"  # a user or a tool: runs, logs, executors' records
    RUNSERVICE = "runservice"  # the runservice, calling an executor


@attrs.frozen
class Identity:
    """A caller a token proved: its role and name (an executor's id, for an executor)."""

    role: Role
    name: str


class TokenError(ValueError):
    """A tokens file or value is malformed; the message names the line, never the token."""


@attrs.frozen
class TokenBook:
    """The tokens a server accepts, each with the identity it proves."""

    entries: tuple[tuple[str, Identity], ...]

    def identify(self, presented: str) -> Identity | None:
        """The identity of ``presented``; None if no token matches (compared in constant time)."""
        found = None
        for token, identity in self.entries:
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = identity
        return found

    def first(self, role: Role) -> str | None:
        """The first token of ``role`` (the one a server presents as that role); None if none."""
        return next((token for token, identity in self.entries if identity.role is role), None)

    @classmethod
    def parse(cls, text: str, where: str = "tokens") -> TokenBook:
        """The tokens of a tokens file's text; ``TokenError`` naming the line that is wrong."""
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 3:
                raise TokenError(f"{where}, line {number}: expected '<role> <name> <token>'")
            role, name, token = words
            line_of = f"{where}, line {number}"
            try:
                kind = Role(role)
            except ValueError:
                raise TokenError(f"{line_of}: the role is one of {_roles()}, not {role!r}") from None
            try:
                check_id("name", name)
            except InvalidIdError as exc:
                raise TokenError(f"{line_of}: {exc.rule}") from None
            entries.append((_token(token, line_of), Identity(kind, name)))
        return cls(tuple(entries))

    @classmethod
    def of(cls, role: Role, tokens: Iterable[str], name: str = "-") -> TokenBook:
        """A book of ``tokens``, each proving ``role`` as ``name``."""
        return cls(tuple((_token(token, role.value), Identity(role, name)) for token in tokens))


def _roles() -> str:
    return ", ".join(role.value for role in Role)


def _token(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable():
        raise TokenError(f"{where}: a token has at least {MIN_TOKEN_CHARS} printable ASCII characters")
    return token


def new_token() -> str:
    """A fresh random token."""
    return secrets.token_urlsafe(32)


class TokenFile:
    """A tokens file, read again whenever it changes (so tokens rotate without a restart)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._book = self._read()

    def _read(self) -> TokenBook:
        try:
            info = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read the tokens file {str(self.path)!r}: {exc}") from exc
        self._seen = (info.st_mtime_ns, info.st_size)
        return TokenBook.parse(text, str(self.path))

    @property
    def book(self) -> TokenBook:
        """The tokens as the file has them now (the last good reading if it became unreadable)."""
        with self._lock:
            try:
                info = self.path.stat()
                if (info.st_mtime_ns, info.st_size) != self._seen:
                    self._book = self._read()
            except (OSError, TokenError) as exc:
                log.warning("%s; the tokens read before stay in force", exc)
            return self._book


def read_secret(path: str | None, variable: str) -> str | None:
    """A secret from the file at ``path`` (its text, stripped), else from the environment
    variable ``variable``; None if neither gives one. Never from the command line."""
    if path is not None:
        try:
            if Path(path).stat().st_mode & 0o077:
                log.warning("%s can be read by other users (a task, say): make it 0600", path)
            return Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"cannot read {path!r}: {exc}") from exc
    value = os.environ.get(variable, "").strip()
    return value or None


Tokens = TokenBook | TokenFile
"""What a server checks tokens against: a fixed book, or a file read again when it changes."""


def book_of(tokens: Tokens) -> TokenBook:
    return tokens.book if isinstance(tokens, TokenFile) else tokens
