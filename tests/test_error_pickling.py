"""Every objstore error crosses processes: it pickles with its message and its attributes."""

from __future__ import annotations

import pickle

import pytest

from objstore import errors

EXAMPLES = [
    errors.NotExistError("k"),
    errors.AlreadyExistsError("k"),
    errors.PreconditionFailedError("k", "etag-1"),
    errors.InvalidArgumentError("bad size"),
    errors.SizeMismatchError("k", 10, 3),
    errors.UnsupportedError("no metadata here"),
    errors.InvalidKeyError("a//b", "no empty segment"),
    errors.KeyConflictError("a", "a/b exists"),
    errors.PermissionDeniedError("denied"),
    errors.RemoteError("failed", status=503, code="SlowDown", request_id="r1", transient=True),
    errors.OutcomeUnknownError("k", "answer lost"),
    errors.IntegrityError("k", "cut"),
    errors.ObjectChangedError("k", "etag-2"),
    errors.StorageIOError(28, "disk full (for 'k')"),
    errors.ConfigError("field 'x' is unknown"),
    errors.MissingExtraError("the command line", "cli", "tqdm"),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda error: type(error).__name__)
def test_an_error_survives_pickling(error: errors.ObjstoreError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__
    assert isinstance(copy, errors.ObjstoreError)


def test_every_error_class_is_tried() -> None:
    classes = {
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, errors.ObjstoreError)
        and value is not errors.ObjstoreError
    }
    assert classes == {type(error) for error in EXAMPLES}
