"""The errors of objstore: one hierarchy, rooted at :class:`ObjstoreError`."""

from __future__ import annotations

from typing import Any

from ._version import DISTRIBUTION


class ObjstoreError(Exception):
    """Base of every error raised by objstore."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, not by calling __init__ again, whose
        # arguments differ between the subclasses: so every error crosses processes.
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(kind: type[ObjstoreError], args: tuple[Any, ...], state: dict[str, Any]) -> ObjstoreError:
    error = kind.__new__(kind, *args)  # (an OSError's errno and strerror come from its args)
    error.args = args
    error.__dict__.update(state)
    return error


class NotExistError(ObjstoreError, FileNotFoundError):
    """The object does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class AlreadyExistsError(ObjstoreError, FileExistsError):
    """A create-only write found an existing object."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} already exists")
        self.key = key


class PreconditionFailedError(ObjstoreError):
    """A conditional write found an object whose etag differs from the expected one."""

    def __init__(self, key: str, expected_etag: str) -> None:
        super().__init__(f"object {key!r} no longer has etag {expected_etag!r}")
        self.key = key
        self.expected_etag = expected_etag


class InvalidArgumentError(ObjstoreError, ValueError):
    """An argument other than a key is invalid (data, size, options)."""


class UnsupportedError(InvalidArgumentError):
    """The backend cannot do what the call asks (for example keep metadata); nothing was changed."""


class SizeMismatchError(InvalidArgumentError):
    """The data source ended before the announced size; nothing was written."""

    def __init__(self, key: str, expected: int, got: int) -> None:
        super().__init__(f"data for {key!r} ended after {got} bytes, {expected} were announced")
        self.key = key
        self.expected = expected
        self.got = got


class InvalidKeyError(ObjstoreError, ValueError):
    """The key breaks a rule of the backend; ``rule`` says which."""

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(f"invalid key {key!r}: {rule}")
        self.key = key
        self.rule = rule


class KeyConflictError(ObjstoreError):
    """The key collides with a directory of the posix tree; the store is unchanged.

    Writing ``a`` while ``a/b`` exists, or ``a/b`` while ``a`` is an object.
    """

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"key {key!r} conflicts with the posix tree: {detail}")
        self.key = key
        self.detail = detail


class PermissionDeniedError(ObjstoreError, PermissionError):
    """The backend refused access."""


class RemoteError(ObjstoreError):
    """The remote service failed, after retries if the failure was transient."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        transient: bool = False,
    ) -> None:
        details = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("status", status),
                ("code", code),
                ("request_id", request_id),
            )
            if value is not None
        )
        super().__init__(f"{message} ({details})" if details else message)
        self.status = status
        self.code = code
        self.request_id = request_id
        self.transient = transient


class OutcomeUnknownError(RemoteError):
    """A conditional write may or may not have been applied: its answer was lost.

    The server may have stored the object before the connection failed, and what the
    object holds now cannot tell whether it did (another write may have followed).
    Read the object and decide from its content; never count the write as refused.
    """

    def __init__(self, key: str, cause: str) -> None:
        super().__init__(f"the outcome of the conditional write of {key!r} is unknown: {cause}")
        self.key = key


class IntegrityError(RemoteError):
    """An answer of the server failed a check: cut short, malformed, or a checksum mismatch."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"S3 answer for {key!r} failed a check: {detail}", transient=True)
        self.key = key
        self.detail = detail


class ObjectChangedError(ObjstoreError):
    """The object is no longer the version a read is pinned to: the one ``if_match`` names, or
    the one a resumed read began on (what was read is of that version)."""

    def __init__(self, key: str, etag: str) -> None:
        super().__init__(f"object {key!r} is no longer version {etag!r}")
        self.key = key
        self.etag = etag


class StorageIOError(ObjstoreError, OSError):
    """A local I/O operation failed (disk full, I/O error, ...)."""


class ConfigError(ObjstoreError, ValueError):
    """The storage configuration is invalid."""


class MissingExtraError(ObjstoreError, ModuleNotFoundError):
    """A part of objstore was imported without the extra of the distribution that installs
    what it needs; the message says which extra, and how to install it."""

    def __init__(self, part: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{part} needs the {extra!r} extra: pip install '{DISTRIBUTION}[{extra}]'"
            f" (missing: {missing})",
            name=missing,
        )
