"""Fixtures for the per-task limits tests (issue 14): platform and worker as separate processes.

Like the e2e area: the session's ``shared_platform`` and a worker per test on its own task queue
(``submitter.worker_type``). ``cgroup_host`` is what the worker will find on this machine; tests
that need per-task cgroups go through ``skip_or_fail`` when there are none.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ci import require_multiuser_host, require_root, skip_or_fail
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.workerfixtures import test_failed
from helpers.workerproc import WorkerProcess, start_worker_process

from tcworker.engines import cgroups

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
def start_worker(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    signing_key: Path,
    shared_platform: PlatformProcess,
    submitter: Submitter,
) -> Iterator[WorkerFactory]:
    """Factory: ``start_worker(taskMaxProcesses=64, ...)`` starts ``tcworker run`` for this test.

    With ``engine="multiuser"`` the tasksDir is a directory task users can traverse (pytest's
    tmp dirs are 0700 root)."""
    made: list[WorkerProcess] = []
    homes: list[Path] = []

    def factory(**overrides: Any) -> WorkerProcess:
        overrides.setdefault("workerType", submitter.worker_type)
        if overrides.get("engine") == "multiuser" and "tasksDir" not in overrides:
            require_multiuser_host("the multiuser engine (it creates task users)")
            home = Path(tempfile.mkdtemp(prefix="tcw-limits-homes-", dir="/tmp"))
            home.chmod(0o755)
            homes.append(home)
            overrides["tasksDir"] = str(home)
        worker = start_worker_process(
            shared_platform, tmp_path / f"worker-{len(made)}", key=signing_key, **overrides
        )
        made.append(worker)
        return worker

    try:
        yield factory
    finally:
        for worker in made:
            worker.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
        if test_failed(request):
            for worker in made:
                print(f"\n===== worker {worker.worker_id} output =====\n{worker.tail(20000)}")
