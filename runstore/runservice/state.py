"""The run service's documents in an objstore ``Storage``, changed by compare-and-swap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from objstore import NotExistError as ObjectMissing
from objstore import ObjectInfo, OutcomeUnknownError, PreconditionFailedError, Storage
from runstore.contract import codec
from runstore.contract.errors import CorruptDocumentError, NotExistError, UnavailableError
from runstore.contract.model import Executor, ExecutorTask, Run, RunTask
from runstore.runservice.index import RunIndex
from runstore.runservice.tasks import find_task, replace_task
from runstore.store import RunStore

T = TypeVar("T")
PREFIX = "runservice/"
MAX_ATTEMPTS = 1000


STRIPES = 64
"""Locks a kind of document has: changes of one document are serialized by one of them."""


@attrs.define
class _Cached(Generic[T]):
    """A document as this runservice knows it: its value, the etag of its stored copy, and
    whether the value has changes the stored copy lacks (``dirty``)."""

    value: T
    etag: str
    dirty: bool = False


class Documents(Generic[T]):
    """One kind of document (runs, executors, executor tasks) under ``runservice/<kind>/``.

    The lease holder is the only writer of its store, so it keeps what it reads and
    writes in memory (written through: the store stays the record) and reads a document
    back only when a write finds its etag stale. With ``complete``, once :meth:`load` has
    read every document of the kind, memory answers :meth:`ids`, :meth:`get` and
    :meth:`exists` alone. A change may be ``durable=False``: kept in memory until the
    document's next durable change (or :meth:`flush`) writes it, for what is announced
    again after a restart (an executor reports its task's status until it is known).
    """

    def __init__(self, storage: Storage, kind: str, document: type[T], *, complete: bool = False) -> None:
        self.storage = storage
        self.kind = kind
        self.document = document
        self.complete = complete
        self._prefix = f"{PREFIX}{kind}/"
        self._guard = threading.Lock()  # guards the dicts and sets below
        self._cache: dict[str, _Cached[T]] = {}
        self._unsure: set[str] = set()  # documents whose stored state memory does not know
        self._corrupt: set[str] = set()  # stored documents that are not of this kind
        self._loaded = False
        self._loading: set[str] | None = None  # while loading: the documents changed meanwhile
        self._locks = [threading.RLock() for _ in range(STRIPES)]

    def _key(self, doc_id: str) -> str:
        return f"{self._prefix}{doc_id}.json"

    def _lock(self, doc_id: str) -> threading.RLock:
        return self._locks[hash(doc_id) % STRIPES]

    def _missing(self, doc_id: str) -> NotExistError:
        return NotExistError(f"{self.kind[:-1]} {doc_id!r} does not exist")

    def _cached(self, doc_id: str) -> _Cached[T] | None:
        with self._guard:
            return self._cache.get(doc_id)

    def _known(self, doc_id: str) -> bool:
        """Whether memory alone tells whether ``doc_id`` exists, and what it holds."""
        with self._guard:
            return doc_id in self._cache or (
                self._loaded and doc_id not in self._unsure and doc_id not in self._corrupt
            )

    def _keep(self, doc_id: str, entry: _Cached[T] | None) -> None:
        with self._guard:
            if self._loading is not None:
                self._loading.add(doc_id)
            if entry is None:
                self._cache.pop(doc_id, None)
            else:
                self._cache[doc_id] = entry
            self._unsure.discard(doc_id)

    def _doubt(self, doc_id: str) -> None:
        """Forget what memory knows of ``doc_id``: the outcome of a change to it was lost."""
        with self._guard:
            if self._loading is not None:
                self._loading.add(doc_id)
            self._cache.pop(doc_id, None)
            self._unsure.add(doc_id)

    def _fetch(self, doc_id: str) -> _Cached[T]:
        """The stored document and its etag (the etag read first: if the document changes in
        between, a write with that etag fails, so a stale etag never passes for a newer one)."""
        try:
            etag = self.storage.stat(self._key(doc_id)).etag
            raw = self.storage.read_bytes(self._key(doc_id))
        except ObjectMissing as exc:
            raise self._missing(doc_id) from exc
        return _Cached(self._decode(doc_id, raw), etag)

    def _decode(self, doc_id: str, raw: bytes) -> T:
        try:
            value = codec.loads(self.document, raw)
        except (ValueError, TypeError) as exc:
            with self._guard:
                self._corrupt.add(doc_id)
            raise CorruptDocumentError(f"{self.kind[:-1]} {doc_id!r} is not a valid document: {exc}") from exc
        with self._guard:
            self._corrupt.discard(doc_id)
        return value

    def _entry(self, doc_id: str) -> _Cached[T]:
        """The document as memory knows it, read from the store (and kept) if it does not."""
        entry = self._cached(doc_id)
        if entry is None:
            if self._known(doc_id):
                raise self._missing(doc_id)
            try:
                entry = self._fetch(doc_id)
            except NotExistError:
                self._keep(doc_id, None)
                raise
            self._keep(doc_id, entry)
        return entry

    def read(self, doc_id: str) -> tuple[T, str]:
        """The document and the etag of its stored copy; ``NotExistError`` if missing,
        ``CorruptDocumentError`` if it is not a document of this kind."""
        with self._lock(doc_id):
            entry = self._entry(doc_id)
            return entry.value, entry.etag

    def get(self, doc_id: str) -> T:
        """The document; ``NotExistError`` or ``CorruptDocumentError``. One not in memory is
        read from the store (one request) without being kept."""
        entry = self._cached(doc_id)
        if entry is not None:
            return entry.value
        if self._known(doc_id):
            raise self._missing(doc_id)
        try:
            raw = self.storage.read_bytes(self._key(doc_id))
        except ObjectMissing as exc:
            raise self._missing(doc_id) from exc
        return self._decode(doc_id, raw)

    def exists(self, doc_id: str) -> bool:
        if self._known(doc_id):
            return self._cached(doc_id) is not None
        return self.storage.exists(self._key(doc_id))

    def create(self, doc_id: str, value: T) -> None:
        """Store a new document; objstore's ``AlreadyExistsError`` if it exists.

        A document id has one creator, so a create whose outcome was lost succeeded if
        the document exists now (others may have changed it since), and is tried again
        if it does not; ``UnavailableError`` if every outcome was lost.
        """
        with self._lock(doc_id):
            for _ in range(MAX_ATTEMPTS):
                try:
                    etag = self.storage.write(self._key(doc_id), codec.dumps(value), if_none_match=True)
                except OutcomeUnknownError:
                    self._doubt(doc_id)
                    if self.storage.exists(self._key(doc_id)):
                        return
                    continue
                self._keep(doc_id, _Cached(value, etag))
                return
        raise UnavailableError(f"{self.kind[:-1]} {doc_id!r} could not be created: every outcome was lost")

    def put(self, doc_id: str, value: T) -> None:
        """Store the document as ``value``, whatever is stored."""
        with self._lock(doc_id):
            try:
                etag = self.storage.write(self._key(doc_id), codec.dumps(value))
            except OutcomeUnknownError:
                self._doubt(doc_id)
                raise
            self._keep(doc_id, _Cached(value, etag))

    def update(self, doc_id: str, change: Callable[[T], T | None], *, durable: bool = True) -> T | None:
        """Apply ``change`` to the current document until the write wins; its result.

        ``change`` returns the new document, or None to leave it as it is; applied to a
        document that already has the change, it returns None or an equal document (a
        write whose outcome was lost is retried from the document as it is then). Without
        ``durable``, the change is kept in memory only, until a durable one.
        ``NotExistError`` if the document is missing; ``UnavailableError`` if the write
        kept failing for ``MAX_ATTEMPTS`` attempts (the request may succeed later).
        """
        with self._lock(doc_id):
            for _ in range(MAX_ATTEMPTS):
                entry = self._entry(doc_id)
                new = change(entry.value)
                if new is None or new == entry.value:
                    return entry.value
                if not durable:
                    self._keep(doc_id, _Cached(new, entry.etag, dirty=True))
                    return new
                if self._written(doc_id, entry, new):
                    return new
        raise UnavailableError(f"{self.kind[:-1]} {doc_id!r} kept changing: try again later")

    def _written(self, doc_id: str, entry: _Cached[T], new: T) -> bool:
        """Write ``new`` over the stored copy ``entry`` knows; False if that copy was stale, or
        the outcome was lost (read it again). The caller holds the document's lock."""
        try:
            etag = self.storage.write(self._key(doc_id), codec.dumps(new), if_match=entry.etag)
        except (PreconditionFailedError, OutcomeUnknownError):
            self._doubt(doc_id)  # changed meanwhile, or maybe by this very write: read again
            return False
        except ObjectMissing as exc:
            self._keep(doc_id, None)
            raise self._missing(doc_id) from exc
        self._keep(doc_id, _Cached(new, etag))
        return True

    def delete(self, doc_id: str) -> None:
        with self._lock(doc_id):
            try:
                self.storage.delete(self._key(doc_id))
            except OutcomeUnknownError:
                self._doubt(doc_id)
                raise
            self._keep(doc_id, None)

    def forget(self, doc_id: str) -> None:
        """Keep ``doc_id`` in memory no more (its changes kept in memory only are written first)."""
        with self._lock(doc_id):
            self.flush(doc_id)
            with self._guard:
                self._cache.pop(doc_id, None)

    def flush(self, doc_id: str) -> None:
        """Write the changes of ``doc_id`` that memory alone has (lost if the stored copy
        changed meanwhile: what memory has was stale)."""
        with self._lock(doc_id):
            entry = self._cached(doc_id)
            if entry is not None and entry.dirty:
                self._written(doc_id, entry, entry.value)

    def dirty(self) -> list[str]:
        """The documents with changes that memory alone has."""
        with self._guard:
            return sorted(doc_id for doc_id, entry in self._cache.items() if entry.dirty)

    def ids(self) -> list[str]:
        """Every document's id (from memory once loaded, with ``complete``), in id order."""
        if self.complete and self._loaded:
            with self._guard:
                return sorted({*self._cache, *self._unsure, *self._corrupt})
        return [info.key[len(self._prefix) : -len(".json")] for info in self._listing()]

    def _listing(self) -> list[ObjectInfo]:
        return [
            info
            for info in self.storage.list(self._prefix)
            if isinstance(info, ObjectInfo) and info.key.endswith(".json")
        ]

    def load(self) -> None:
        """Read the store's documents of this kind into memory: those memory does not have,
        or has at another etag (one request, plus one or two for each of those). A document
        this runservice changes meanwhile stays as that change left it."""
        with self._guard:
            self._loading = set()
        try:
            listed = {info.key[len(self._prefix) : -len(".json")]: info.etag for info in self._listing()}
            for doc_id, etag in listed.items():
                with self._lock(doc_id):
                    entry = self._cached(doc_id)
                    if entry is None or entry.etag != etag:
                        try:
                            self._keep(doc_id, self._fetch(doc_id))
                        except (NotExistError, CorruptDocumentError):
                            self._keep(doc_id, None)
        except BaseException:
            with self._guard:
                self._loading = None
            raise
        with self._guard:
            changed, self._loading = self._loading or set(), None
            for doc_id in set(self._cache) - listed.keys() - changed:
                del self._cache[doc_id]
            self._corrupt &= listed.keys()
            self._unsure &= changed
            self._loaded = True


class State:
    """Everything the runservice keeps in one store: its three kinds of documents, and the
    run store of the tasks' logs, archives and caches."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.store = RunStore(storage)
        self.index = RunIndex(storage)
        self.runs = Documents(storage, "runs", Run)
        self.executors = Documents(storage, "executors", Executor, complete=True)
        self.executor_tasks = Documents(storage, "executortasks", ExecutorTask, complete=True)

    def change_task(self, run_id: str, task_id: str, change: Callable[[RunTask], RunTask]) -> Run:
        """Apply ``change`` to a task of a run, by compare-and-swap of the run; the run."""

        def apply(run: Run) -> Run:
            task = find_task(run, task_id)
            assert task is not None
            return replace_task(run, change(task))

        run = self.runs.update(run_id, apply)
        assert run is not None
        return run

    def load(self) -> None:
        """Read what the loops keep in memory from the store: executors, executor tasks and
        the index of unfinished runs (on taking the lease, and in each sweep)."""
        self.executors.load()
        self.executor_tasks.load()
        self.index.reload()

    def flush(self) -> None:
        """Write every change that memory alone has."""
        for doc_id in self.runs.dirty():
            self.runs.flush(doc_id)
        for doc_id in self.executor_tasks.dirty():
            self.executor_tasks.flush(doc_id)
