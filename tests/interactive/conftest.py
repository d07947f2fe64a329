"""Fixtures for the interactive-shell tests: real platform, real `tcworker run` processes (the
tests/e2e harness, reused, not copied)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "e2e")]
from e2e_harness import (  # noqa: E402
    Submitter,
    WorkerProcess,
    clean_env,
    kill_marked,
    new_signing_key,
    unique_worker_type,
    worker_config,
)

try:
    from platformproc import PlatformProcess
except ImportError:  # tests/ imported as a package
    from tests.platformproc import PlatformProcess  # type: ignore[no-redef]


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_signing_key(tmp_path_factory.mktemp("keys") / "ed25519.key")


@pytest.fixture
def submitter(shared_platform: PlatformProcess) -> Iterator[Submitter]:
    sub = Submitter(
        shared_platform.queue(),
        shared_platform.root_url,
        unique_worker_type(),
        shared_platform.root_access_token,
    )
    try:
        yield sub
    finally:
        kill_marked(sub.mark)


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
