"""Fixtures of the multiuser isolation tests: a multiuser engine initialised as a worker would be
(root, private config and signing key), plus the engine helpers shared with ``tests/engines``."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ci import require_multiuser_host
from helpers.engines import host_dirs, make_config, run_context
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import WorkerProcess, start_worker_process

from tcworker.engines.multiuser import MultiuserEngine


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    require_multiuser_host("the multiuser isolation tests")
    with host_dirs() as root:
        yield root


@pytest.fixture
def worker_files(scratch_root: Path) -> dict[str, Path]:
    """The worker's private files as a deployment would have them: config and key 0600 root."""
    config = make_config(scratch_root, "multiuser")
    config_file = scratch_root / "worker" / "generic-worker.config"
    config_file.write_text(json.dumps(config.as_dict(include_secrets=True)))
    os.chmod(config_file, 0o600)
    return {"config": config_file, "key": Path(config.ed25519SigningKeyLocation)}


@pytest.fixture
async def mu_engine(scratch_root: Path, worker_files: dict[str, Path]) -> AsyncIterator[Any]:
    engine = MultiuserEngine(kill_grace=1.0)
    config = make_config(scratch_root, "multiuser")
    await engine.initialise(config)
    engine.test_config = config
    try:
        yield engine
    finally:
        await engine.shutdown()


@pytest.fixture
async def box(mu_engine: MultiuserEngine) -> AsyncIterator[Any]:
    """A prepared multiuser sandbox (a task user and its directory), destroyed afterwards."""
    sandbox = await mu_engine.prepare(run_context())
    try:
        yield sandbox
    finally:
        await sandbox.destroy()


WorkerFactory = Callable[..., tuple[WorkerProcess, Submitter]]


@pytest.fixture
def start_host_worker(scratch_root: Path, shared_platform: PlatformProcess) -> Iterator[WorkerFactory]:
    """Factory: ``start_host_worker(engine="multiuser", capacity=2)`` starts a real ``tcworker run``
    process (its own task queue, tasksDir under a root task users can traverse) and a submitter
    for it. Workers are stopped at teardown and their output printed."""
    made: list[tuple[WorkerProcess, Submitter]] = []

    def factory(*, env: dict[str, str] | None = None, **overrides: Any) -> tuple[WorkerProcess, Submitter]:
        submitter = Submitter.for_platform(shared_platform)
        workdir = scratch_root / f"worker-{len(made)}"
        workdir.mkdir(mode=0o755)
        overrides.setdefault("engine", "multiuser")
        overrides.setdefault("tasksDir", str(workdir / "tasks"))
        overrides.setdefault("headlessTasks", True)
        worker = start_worker_process(
            shared_platform, workdir, env=env, workerType=submitter.worker_type, **overrides
        )
        made.append((worker, submitter))
        return worker, submitter

    try:
        yield factory
    finally:
        for worker, submitter in made:
            worker.stop()
            kill_marked(submitter.mark)
            print(f"\n===== worker {worker.worker_id} output (tail) =====\n{worker.tail(8000)}")
