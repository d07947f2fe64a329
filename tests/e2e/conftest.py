"""Fixtures for the worker end-to-end tests: platform and worker as separate processes.

`shared_platform` (tests/conftest.py) is one `tcworker queue serve` for the session; each test
isolates itself with its own workerType (task queue), so workers of different tests never claim
each other's tasks. Tests needing a special platform (short claim timeout) use `platform_server`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import WorkerProcess, new_signing_key, start_worker_process


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report so fixtures can dump process output when a test failed."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_signing_key(tmp_path_factory.mktemp("keys") / "ed25519.key")


@pytest.fixture
def submitter(shared_platform: PlatformProcess) -> Iterator[Submitter]:
    sub = Submitter.for_platform(shared_platform)
    try:
        yield sub
    finally:
        kill_marked(sub.mark)


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    signing_key: Path,
    shared_platform: PlatformProcess,
    submitter: Submitter,
) -> Iterator[WorkerFactory]:
    """Factory: `start_worker(capacity=4, ...)` starts `tcworker run` for this test's queue.

    Keyword arguments are generic-worker config keys; `platform=` points the worker at another
    platform process, `env=` adds environment variables. Every worker is stopped at teardown and
    its output printed if the test failed.
    """
    made: list[WorkerProcess] = []

    def factory(
        *, platform: PlatformProcess | None = None, env: dict[str, str] | None = None, **overrides: Any
    ) -> WorkerProcess:
        plat = platform or shared_platform
        overrides.setdefault("workerType", submitter.worker_type)
        worker = start_worker_process(
            plat, tmp_path / f"worker-{len(made)}", key=signing_key, env=env, **overrides
        )
        made.append(worker)
        return worker

    try:
        yield factory
    finally:
        for worker in made:
            worker.stop()
        if _failed(request):
            for worker in made:
                print(f"\n===== worker {worker.worker_id} output =====\n{worker.tail(20000)}")
            print(f"\n===== platform output (tail) =====\n{shared_platform.output()[-6000:]}")
