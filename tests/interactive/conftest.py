"""Fixtures for the interactive-shell tests: real platform, real `tcworker run` processes (the worker
harness of tests/helpers/workerproc.py, reused, not copied)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess, clean_env, worker_config

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    tmp_path: Path, signing_key: Path, shared_platform: PlatformProcess, submitter: Submitter
) -> Iterator[WorkerFactory]:
    """`start_worker(rootURL=..., engine="docker", ...)`: a `tcworker run` on this test's queue."""
    made: list[WorkerProcess] = []

    def factory(**overrides: Any) -> WorkerProcess:
        workdir = tmp_path / f"worker-{len(made)}"
        workdir.mkdir()
        overrides.setdefault("workerType", submitter.worker_type)
        config = worker_config(
            shared_platform.root_url, shared_platform.root_access_token, workdir, signing_key, **overrides
        )
        worker = WorkerProcess(workdir, config, clean_env())
        made.append(worker)
        return worker.start()

    try:
        yield factory
    finally:
        for worker in made:
            worker.stop()
            print(f"\n===== worker {worker.worker_id} output (tail) =====\n{worker.tail(6000)}")
