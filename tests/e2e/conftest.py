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
from helpers.workerfixtures import test_failed
from helpers.workerproc import WorkerProcess, start_worker_process

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
        if test_failed(request):
            for worker in made:
                print(f"\n===== worker {worker.worker_id} output =====\n{worker.tail(20000)}")
            print(f"\n===== platform output (tail) =====\n{shared_platform.output()[-6000:]}")
