"""A task's logs as users read them: from the run store once fetched, else from the executor
that runs the task, as far as it is written; followed as they grow, until the step ends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncGenerator
from typing import BinaryIO, cast

from objstore import NotExistError as ObjectMissing
from runstore.contract.errors import NotExistError, RemoteServiceError, ServiceError, UnavailableError
from runstore.contract.model import ExecutorTask, ExecutorTaskPhase, RunTask
from runstore.runservice.fetcher import Fetcher
from runstore.runservice.state import State

POLL = 0.5
"""Seconds between two looks at a followed log."""
FOLLOW_LIMIT = 600.0
"""Seconds one follow answer lasts at most; the client follows on from where it stopped (``start``)."""
QUIET = 20.0
"""Seconds without a new byte after which a follow answer ends (before a client's read times out)."""
MAX_FOLLOWERS = 64
"""Logs followed at once: each holds a coroutine of the server (no thread) while it waits."""
_CHUNK = 1 << 16


class Logs:
    """The logs of the runs in a runservice's store."""

    def __init__(self, state: State, fetcher: Fetcher) -> None:
        self._state = state
        self._fetcher = fetcher
        self._followers = threading.BoundedSemaphore(MAX_FOLLOWERS)

    def read(self, task: RunTask, step: int | str, start: int = 0) -> BinaryIO:
        """The log from byte ``start``, as far as it exists now: the run store's copy, else the
        executor's; ``NotExistError`` if neither has it. Blocking: a worker thread calls it."""
        stream = self._stored(task.id, step, start) or self._on_executor(task.id, step, start)
        if stream is None:
            raise NotExistError(f"task {task.name!r} has no log {step!r} (yet)")
        return stream

    async def follow(
        self, run_id: str, task: RunTask, step: int | str, start: int = 0
    ) -> AsyncGenerator[bytes, None]:
        """The log from byte ``start`` as it is written, until its step ended and all of it was
        sent, or :data:`QUIET` seconds passed without a new byte, or :data:`FOLLOW_LIMIT`
        passed (the client then asks again from where it got).

        Its first chunk is b"", once it holds one of :data:`MAX_FOLLOWERS` slots (``UnavailableError``
        if none is free), so a server knows the follow started before it answers. It waits on
        the loop; each read of the store or of the executor runs in a worker thread. The slot
        is released however it ends (the end, an error, closed before its end).
        """
        if not self._followers.acquire(blocking=False):
            raise UnavailableError(f"{MAX_FOLLOWERS} logs are followed already; retry later")
        try:
            yield b""
            offset = start
            deadline = time.monotonic() + FOLLOW_LIMIT
            heard = time.monotonic()
            while time.monotonic() < min(deadline, heard + QUIET):
                stored = await asyncio.to_thread(self._stored, task.id, step, offset)
                if stored is not None:  # fetched: the rest is there
                    async with contextlib.aclosing(_chunks(stored)) as chunks:
                        async for chunk in chunks:
                            yield chunk
                    return
                executor_task = await asyncio.to_thread(self._executor_task, task.id)
                if executor_task is None and await asyncio.to_thread(self._never_coming, run_id, task.id):
                    return
                ended = executor_task is not None and _ended(executor_task, step)
                stream = await asyncio.to_thread(self._on_executor, task.id, step, offset)
                if stream is not None:
                    try:
                        async with contextlib.aclosing(_chunks(stream)) as chunks:
                            async for chunk in chunks:
                                offset += len(chunk)
                                heard = time.monotonic()
                                yield chunk
                    except ServiceError:
                        continue  # it broke off: look again
                if ended:
                    return  # the step had ended before that read: its log was complete
                await asyncio.sleep(POLL)
        finally:
            self._followers.release()

    def _stored(self, task_id: str, step: int | str, start: int) -> BinaryIO | None:
        try:
            return self._state.store.open_log(task_id, step, start=start)
        except ObjectMissing:
            return None

    def _executor_task(self, task_id: str) -> ExecutorTask | None:
        try:
            return self._state.executor_tasks.get(task_id)
        except NotExistError:
            return None

    def _on_executor(self, task_id: str, step: int | str, start: int) -> BinaryIO | None:
        """The log from ``start`` as the executor of the task has it now; None if it has none."""
        executor_task = self._executor_task(task_id)
        client = self._fetcher.client_of(executor_task.executor_id) if executor_task is not None else None
        if client is None:
            return None
        try:
            return cast(BinaryIO, client.log(task_id, step, start=start))
        except RemoteServiceError as exc:
            if exc.status == 404:
                return None
            raise
        except ServiceError:
            return None  # the executor did not answer: look again later

    def _never_coming(self, run_id: str, task_id: str) -> bool:
        """Whether a log that neither the store nor an executor has will not come: its run is
        gone, or its task finished and was fetched, or never ran."""
        try:
            run = self._state.runs.get(run_id)
        except NotExistError:
            return True
        task = next((task for task in run.tasks if task.id == task_id), None)
        return task is None or task.fetched or (task.status.finished and not task.registered)


def _ended(executor_task: ExecutorTask, step: int | str) -> bool:
    """Whether the log ``step`` of a task is complete on its executor."""
    if executor_task.phase.finished:
        return True
    states = executor_task.step_states
    if step == "setup":
        return any(state.phase is not ExecutorTaskPhase.NOTSTARTED for state in states)
    assert isinstance(step, int)
    return step < len(states) and states[step].phase.finished


async def _chunks(stream: BinaryIO) -> AsyncGenerator[bytes, None]:
    """The chunks of a blocking stream, each read in a worker thread; the stream closed at the end."""
    try:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(stream.close)
