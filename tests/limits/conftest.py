"""Fixtures for the per-task limits tests (issue 14): platform and worker as separate processes.

Like the e2e area: the session's ``shared_platform`` and a worker per test on its own task queue
(``submitter.worker_type``). ``cgroup_host`` is what the worker will find on this machine; tests
that need per-task cgroups go through ``skip_or_fail`` when there are none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from helpers.ci import require_root, skip_or_fail
from helpers.engines import host_dirs, make_config
from helpers.workerproc import WorkerProcess

from tcworker.engines import cgroups
from tcworker.engines.simple import SimpleEngine

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture(scope="session")
def cgroup_host() -> cgroups.CgroupHost:
    """The host's cgroups as the worker detects them (the tests here need limits and a kill)."""
    require_root("per-task cgroups")
    host = cgroups.detect()
    if host is None or host.memory is None or host.pids is None:
        skip_or_fail(f"this host offers no cgroup memory and pids limits ({host})")
    return host


@pytest.fixture
def start_worker(worker_factory: WorkerFactory) -> WorkerFactory:
    """``start_worker(taskMaxProcesses=64, engine="multiuser", ...)``: see ``worker_factory``."""
    return worker_factory


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A tasks/scratch directory pair for engine-level tests (removed afterwards)."""
    with host_dirs() as root:
        yield root


@pytest.fixture
def group(cgroup_host: cgroups.CgroupHost) -> Iterator[cgroups.TaskCgroup]:
    """One limited cgroup (64 processes, 256 MiB) for a test's stubs, removed with what is left in it."""
    made = cgroup_host.create(
        cgroups.group_name(f"task_limitstest_{os.getpid()}"), cgroups.TaskLimits(64, 256 << 20)
    )
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
async def simple_engine(
    scratch: Path, cgroup_host: cgroups.CgroupHost
) -> AsyncIterator[Callable[[int], Awaitable[SimpleEngine]]]:
    """``await simple_engine(capacity)``: an initialised simple engine on ``scratch`` (with its
    ready cgroups and parked stubs), shut down after the test."""
    started: list[SimpleEngine] = []

    async def start(capacity: int) -> SimpleEngine:
        engine = SimpleEngine(kill_grace=1.0)
        await engine.initialise(make_config(scratch, "simple", capacity=capacity))
        started.append(engine)
        return engine

    yield start
    for engine in started:
        await engine.shutdown()
