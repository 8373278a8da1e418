"""The main job: a runservice and an executor on loopback run a small pipeline, restart it,
and delete both runs, showing that shared logs live exactly as long as a run uses them."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from objstore import NotExistError, PosixStorage
from runstore.contract.auth import Role, TokenBook, new_token
from runstore.contract.model import Run, RunConfig, RunPhase, Step, StepKind, TaskConfig
from runstore.executor.executor import Executor
from runstore.runservice.api import serve
from runstore.runservice.service import RunService

PIPELINE = RunConfig(
    tasks=[
        TaskConfig(
            name="checkout",
            steps=[
                Step(StepKind.RUN, "fetch sources", command="mkdir -p src && echo 'print(42)' > src/app.py"),
                Step(StepKind.SAVE_TO_WORKSPACE, "keep sources", paths=["src"]),
            ],
        ),
        TaskConfig(
            name="dependencies",
            steps=[
                Step(StepKind.RESTORE_CACHE, "restore deps", keys=["deps-v1"]),
                Step(
                    StepKind.RUN,
                    "install deps",
                    command="if [ -f deps/lib.txt ]; then echo 'deps from cache'; "
                    "else mkdir -p deps && echo lib > deps/lib.txt && echo 'deps installed'; fi",
                ),
                Step(StepKind.SAVE_CACHE, "cache deps", paths=["deps"], keys=["deps-v1"]),
            ],
        ),
        TaskConfig(
            name="test",
            depends=["checkout", "dependencies"],
            steps=[
                Step(StepKind.RESTORE_WORKSPACE, "restore sources"),
                Step(StepKind.RUN, "run tests", command="cat src/app.py && echo 'all tests passed'"),
            ],
        ),
    ]
)


def wait_finished(service: RunService, run_id: str, timeout: float = 60.0) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = service.runs.get(run_id)
        if run.phase is RunPhase.FINISHED:
            return run
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} did not finish in {timeout} s")


def show(run: Run) -> None:
    print(f"  run {run.id}: {run.phase.value}, {run.result.value}")
    for task in run.tasks:
        how = "shared with the restarted run" if task.shared else "ran"
        print(f"    {task.name:<13} {task.status.value:<8} task {task.id} ({how})")


def read_log(service: RunService, run: Run, name: str, step: int) -> str:
    with service.state.store.open_log(run.task(name).id, step) as stream:
        return "\n".join(f"     | {line}" for line in stream.read().decode().splitlines())


def demo(store_path: str) -> int:
    started = time.monotonic()
    storage = PosixStorage(store_path)
    executor_dir = tempfile.mkdtemp(prefix="runstore-executor-")
    tokens = {name: new_token() for name in ("executor", "runservice")}  # its own, for this run only
    book = TokenBook.parse(
        f"executor demo-executor {tokens['executor']}\nrunservice demo {tokens['runservice']}"
    )
    service = RunService(storage, runservice_token=tokens["runservice"])
    server = serve(service, tokens=book)
    executor = Executor(
        server.url,
        executor_dir,
        executor_id="demo-executor",
        active_tasks_limit=2,
        token=tokens["executor"],
        runservice_tokens=TokenBook.of(Role.RUNSERVICE, [tokens["runservice"]]),
    )
    executor.start()
    print(f"runservice at {server.url}, store in {os.path.abspath(store_path)}")
    print(f"executor at {executor.url}, working in {executor_dir}")
    try:
        first = service.runs.create(PIPELINE, "/project/demo/branch/main")
        print(f"1. run {first.id}: checkout and dependencies, then test (which depends on both)")
        first = wait_finished(service, first.id)
        show(first)
        print("   the dependencies task saved a cache:")
        print(read_log(service, first, "dependencies", 1))
        print("   the test task restored the checkout's workspace archive:")
        print(read_log(service, first, "test", 1))

        second = service.runs.restart(first.id)
        print(f"2. restart: run {second.id}")
        second = wait_finished(service, second.id)
        show(second)

        service.runs.delete(first.id)
        print(f"3. deleted run {first.id}; the shared test log survives for run {second.id}:")
        print(read_log(service, second, "test", 1))

        service.runs.delete(second.id)
        print(f"4. deleted run {second.id}; the test log is gone:")
        try:
            read_log(service, second, "test", 1)
        except NotExistError as error:
            print(f"   {error}")
        else:
            raise AssertionError("the log outlived every run that used it")
        left = list(storage.list_keys("logs/"))
        print(f"   task logs left in the store: {len(left)}")
    finally:
        executor.stop()
        server.stop()
        service.stop()
        shutil.rmtree(executor_dir, ignore_errors=True)
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0
