"""The run service's documents in an objstore ``Storage``, changed by compare-and-swap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from objstore import NotExistError as ObjectMissing
from objstore import OutcomeUnknownError, PreconditionFailedError, Storage
from runstore.contract import codec
from runstore.contract.errors import CorruptDocumentError, NotExistError, UnavailableError
from runstore.contract.model import Executor, ExecutorTask, Run, RunTask
from runstore.runservice.index import RunIndex
from runstore.runservice.tasks import find_task, replace_task
from runstore.store import RunStore

T = TypeVar("T")
PREFIX = "runservice/"
MAX_ATTEMPTS = 1000


class Documents(Generic[T]):
    """One kind of document (runs, executors, executor tasks) under ``runservice/<kind>/``."""

    def __init__(self, storage: Storage, kind: str, document: type[T]) -> None:
        self.storage = storage
        self.kind = kind
        self.document = document
        self._prefix = f"{PREFIX}{kind}/"

    def _key(self, doc_id: str) -> str:
        return f"{self._prefix}{doc_id}.json"

    def read(self, doc_id: str) -> tuple[T, str]:
        """The document and its etag; ``NotExistError`` if missing, ``CorruptDocumentError``
        if it is not a document of this kind.

        The etag is read first: if the document changes in between, a write with that
        etag fails, so a stale etag never passes for a newer document.
        """
        try:
            etag = self.storage.stat(self._key(doc_id)).etag
            raw = self.storage.read_bytes(self._key(doc_id))
        except ObjectMissing as exc:
            raise NotExistError(f"{self.kind[:-1]} {doc_id!r} does not exist") from exc
        return self._decode(doc_id, raw), etag

    def _decode(self, doc_id: str, raw: bytes) -> T:
        try:
            return codec.loads(self.document, raw)
        except (ValueError, TypeError) as exc:
            raise CorruptDocumentError(f"{self.kind[:-1]} {doc_id!r} is not a valid document: {exc}") from exc

    def get(self, doc_id: str) -> T:
        """The document (one request: no etag); ``NotExistError`` or ``CorruptDocumentError``."""
        try:
            raw = self.storage.read_bytes(self._key(doc_id))
        except ObjectMissing as exc:
            raise NotExistError(f"{self.kind[:-1]} {doc_id!r} does not exist") from exc
        return self._decode(doc_id, raw)

    def exists(self, doc_id: str) -> bool:
        return self.storage.exists(self._key(doc_id))

    def create(self, doc_id: str, value: object) -> None:
        """Store a new document; objstore's ``AlreadyExistsError`` if it exists.

        A document id has one creator, so a create whose outcome was lost succeeded if
        the document exists now (others may have changed it since), and is tried again
        if it does not; ``UnavailableError`` if every outcome was lost.
        """
        for _ in range(MAX_ATTEMPTS):
            try:
                self.storage.write(self._key(doc_id), codec.dumps(value), if_none_match=True)
                return
            except OutcomeUnknownError:
                if self.exists(doc_id):
                    return
        raise UnavailableError(f"{self.kind[:-1]} {doc_id!r} could not be created: every outcome was lost")

    def put(self, doc_id: str, value: object) -> None:
        self.storage.write(self._key(doc_id), codec.dumps(value))

    def update(self, doc_id: str, change: Callable[[T], T | None]) -> T | None:
        """Apply ``change`` to the current document until the write wins; its result.

        ``change`` returns the new document, or None to leave it as it is; applied to a
        document that already has the change, it returns None or an equal document (a
        write whose outcome was lost is retried from the document as it is then).
        ``NotExistError`` if the document is missing; ``UnavailableError`` if other writers
        kept winning for ``MAX_ATTEMPTS`` attempts (the request may succeed later).
        """
        for _ in range(MAX_ATTEMPTS):
            current, etag = self.read(doc_id)
            new = change(current)
            if new is None or new == current:
                return current
            try:
                self.storage.write(self._key(doc_id), codec.dumps(new), if_match=etag)
            except (PreconditionFailedError, OutcomeUnknownError):
                continue  # changed meanwhile, or maybe changed by this very write: read again
            except ObjectMissing as exc:
                raise NotExistError(f"{self.kind[:-1]} {doc_id!r} does not exist") from exc
            return new
        raise UnavailableError(f"{self.kind[:-1]} {doc_id!r} kept changing: try again later")

    def delete(self, doc_id: str) -> None:
        self.storage.delete(self._key(doc_id))

    def ids(self) -> list[str]:
        return [
            key[len(self._prefix) : -len(".json")]
            for key in self.storage.list_keys(self._prefix)
            if key.endswith(".json")
        ]


class State:
    """Everything the runservice keeps in one store: its three kinds of documents, and the
    run store of the tasks' logs, archives and caches."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.store = RunStore(storage)
        self.index = RunIndex(storage)
        self.runs = Documents(storage, "runs", Run)
        self.executors = Documents(storage, "executors", Executor)
        self.executor_tasks = Documents(storage, "executortasks", ExecutorTask)

    def change_task(self, run_id: str, task_id: str, change: Callable[[RunTask], RunTask]) -> None:
        """Apply ``change`` to a task of a run, by compare-and-swap of the run."""

        def apply(run: Run) -> Run:
            task = find_task(run, task_id)
            assert task is not None
            return replace_task(run, change(task))

        self.runs.update(run_id, apply)
