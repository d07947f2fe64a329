"""Fixtures of the multiuser isolation tests: a multiuser engine initialised as a worker would be
(root, private config and signing key), plus the engine helpers shared with ``tests/engines``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engines"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from e2e_harness import (  # noqa: E402
    Submitter,
    WorkerProcess,
    clean_env,
    kill_marked,
    new_signing_key,
    unique_worker_type,
    worker_config,
)
from enginehelpers import host_dirs, make_config  # noqa: E402
from platformproc import PlatformProcess  # noqa: E402

from tcworker.engines.multiuser import MultiuserEngine  # noqa: E402


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("multiuser isolation tests need root (CI runs them as root)")
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


WorkerFactory = Callable[..., tuple[WorkerProcess, Submitter]]


@pytest.fixture
def start_host_worker(scratch_root: Path, shared_platform: PlatformProcess) -> Iterator[WorkerFactory]:
    """Factory: ``start_host_worker(engine="multiuser", capacity=2)`` starts a real ``tcworker run``
    process (its own task queue, tasksDir under a root task users can traverse) and a submitter
    for it. Workers are stopped at teardown and their output printed."""
    made: list[tuple[WorkerProcess, Submitter]] = []

    def factory(*, env: dict[str, str] | None = None, **overrides: Any) -> tuple[WorkerProcess, Submitter]:
        submitter = Submitter(
            queue=shared_platform.queue(),
            root_url=shared_platform.root_url,
            worker_type=unique_worker_type(),
            root_token=shared_platform.root_access_token,
        )
        workdir = scratch_root / f"worker-{len(made)}"
        workdir.mkdir(mode=0o755)
        key = new_signing_key(workdir / "ed25519.key")
        overrides.setdefault("engine", "multiuser")
        overrides.setdefault("tasksDir", str(workdir / "tasks"))
        overrides.setdefault("headlessTasks", True)
        config = worker_config(
            shared_platform.root_url,
            shared_platform.root_access_token,
            workdir,
            key,
            workerType=submitter.worker_type,
            **overrides,
        )
        worker = WorkerProcess(workdir, config, clean_env(**(env or {})))
        made.append((worker, submitter))
        worker.start()
        return worker, submitter

    try:
        yield factory
    finally:
        for worker, submitter in made:
            worker.stop()
            kill_marked(submitter.mark)
            print(f"\n===== worker {worker.worker_id} output (tail) =====\n{worker.tail(8000)}")
