"""The executor's HTTP API, for the runservice: task logs (as far as written) and archives."""

from __future__ import annotations

import os
from pathlib import Path

from runstore.contract.auth import Tokens
from runstore.contract.errors import BadRequestError, NotExistError
from runstore.contract.http.server import JsonApp, Request, Response, file_response
from runstore.contract.routes import ExecutorRoutes
from runstore.errors import InvalidIdError
from runstore.executor.files import TaskFiles
from runstore.ids import parse_log_step, parse_step


class ExecutorApp(JsonApp):
    """Serves the files of the tasks under ``tasks_dir`` to callers with a runservice token of
    ``tokens`` (None: to anyone); a request with a body is refused before any of it is read."""

    table = ExecutorRoutes
    takes_bodies = False

    def __init__(self, tasks_dir: Path, *, tokens: Tokens | None = None) -> None:
        self._tasks_dir = tasks_dir
        self.tokens = tokens

    def log(self, request: Request, task_id: str, step: str) -> Response:
        files = self._files(task_id)
        try:
            number = parse_log_step(step)
        except InvalidIdError as exc:
            raise BadRequestError(f'{exc} (or "setup")') from exc
        path = files.step_log(number) if isinstance(number, int) else files.setup_log
        start = request.query_params.get("start", "0")
        if not start.isdigit():
            raise BadRequestError(f"start is a byte offset, not {start!r}")
        return _file_response(path, "text/plain; charset=utf-8", f"log {step} of task {task_id}", int(start))

    def archive(self, request: Request, task_id: str, step: str) -> Response:
        try:
            number = parse_step(step)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc
        path = self._files(task_id).archive(number)
        return _file_response(path, "application/x-tar", f"archive of step {step} of task {task_id}")

    def _files(self, task_id: str) -> TaskFiles:
        try:
            return TaskFiles.of(self._tasks_dir, task_id)
        except InvalidIdError as exc:
            raise BadRequestError(str(exc)) from exc


def _file_response(path: Path, content_type: str, what: str, start: int = 0) -> Response:
    """Stream ``path`` from byte ``start`` on, as far as it is written now (its Content-Length);
    ``NotExistError`` if there is no such file."""
    try:
        file = path.open("rb")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise NotExistError(f"no {what}") from exc
    try:
        size = max(0, os.fstat(file.fileno()).st_size - start)
        file.seek(start)
    except BaseException:
        file.close()
        raise
    return file_response(file, content_type, size=size)
