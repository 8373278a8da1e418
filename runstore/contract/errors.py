"""One error hierarchy for the run service, with the kinds an HTTP status carries.

A handler maps an error's ``kind`` to a status code and a JSON body ``{"kind": ...,
"message": ...}``; a client turns such a response back into a :class:`RemoteServiceError`
of the same kind, distinct from the local errors.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    BAD_REQUEST = "bad_request"
    NOT_EXIST = "not_exist"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (a dependency such as the store failed)."""
        return self is ErrorKind.UNAVAILABLE

    @classmethod
    def from_status(cls, status: int) -> ErrorKind:
        for kind, code in _STATUS.items():
            if code == status:
                return kind
        if status in (502, 504):  # a gateway's answer: the component behind it did not
            return cls.UNAVAILABLE
        return cls.BAD_REQUEST if 400 <= status < 500 else cls.INTERNAL


_STATUS = {
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_EXIST: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.INTERNAL: 500,
    ErrorKind.UNAVAILABLE: 503,
}


class ServiceError(Exception):
    """Base of the run service's errors; ``kind`` says which HTTP status it maps to."""

    kind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: the kind is ``unavailable`` (for a
        :class:`RemoteServiceError`, the kind the other component answered)."""
        return self.kind.retryable


class BadRequestError(ServiceError):
    kind = ErrorKind.BAD_REQUEST


class NotExistError(ServiceError):
    kind = ErrorKind.NOT_EXIST


class UnauthorizedError(ServiceError):
    kind = ErrorKind.UNAUTHORIZED


class ForbiddenError(ServiceError):
    kind = ErrorKind.FORBIDDEN


class ConflictError(ServiceError):
    kind = ErrorKind.CONFLICT


class TooLargeError(ServiceError):
    """A request body, or what it describes, is over a limit."""

    kind = ErrorKind.TOO_LARGE


class InternalError(ServiceError):
    kind = ErrorKind.INTERNAL


class CorruptDocumentError(InternalError):
    """A stored document is not one this service wrote (not JSON, or not of its kind)."""


class UnavailableError(ServiceError):
    """A dependency (the store) failed for now; the same request may succeed later."""

    kind = ErrorKind.UNAVAILABLE


class RemoteServiceError(ServiceError):
    """An error response from another run service component (``kind`` from its body)."""

    def __init__(self, kind: ErrorKind, message: str, status: int) -> None:
        super().__init__(f"{kind.value} ({status}): {message}")
        self.kind = kind
        self.status = status
        self.remote_message = message


class LeaseHeldError(ServiceError):
    """Another runservice instance owns the store."""

    kind = ErrorKind.CONFLICT


class LeaseLostError(ServiceError):
    """This runservice does not hold the store's lease (any more): it changes nothing; another
    instance may serve the request."""

    kind = ErrorKind.UNAVAILABLE
