"""Fixtures every area that runs real ``tcworker run`` processes shares (e2e, livelog, mounts,
interactive): the session's signing key, a submitter on a task queue of its own, and the report
hook that lets a fixture know whether its test failed (to print process output then).

Registered for the whole suite by ``tests/conftest.py``; an area's own conftest keeps only what
differs (its ``start_worker``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.ci import require_multiuser_host
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import WorkerProcess, new_signing_key, start_worker_process

WorkerFactory = Callable[..., WorkerProcess]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report so fixtures can dump process output when a test failed."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)


def test_failed(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test's call phase failed (or never ran)."""
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


test_failed.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


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


@pytest.fixture
def worker_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    signing_key: Path,
    shared_platform: PlatformProcess,
    submitter: Submitter,
) -> Iterator[WorkerFactory]:
    """Factory: ``start(capacity=4, ...)`` starts ``tcworker run`` for this test's queue (an
    area's conftest names it ``start_worker``).

    Keyword arguments are generic-worker config keys; ``platform=`` points the worker at another
    platform process, ``env=`` adds environment variables, ``workdir=`` picks the worker's
    directory (the same one twice restarts a worker on its caches / downloads). With ``engine="multiuser"`` and no
    ``tasksDir`` the tasks dir is one task users can traverse (pytest's tmp dirs are 0700 root).
    Every worker is stopped at teardown and its output printed if the test failed.
    """
    made: list[WorkerProcess] = []
    homes: list[Path] = []

    def factory(
        *,
        platform: PlatformProcess | None = None,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        **overrides: Any,
    ) -> WorkerProcess:
        overrides.setdefault("workerType", submitter.worker_type)
        if overrides.get("engine") == "multiuser" and "tasksDir" not in overrides:
            require_multiuser_host("the multiuser engine (it creates task users)")
            home = Path(tempfile.mkdtemp(prefix="tcw-tasks-", dir="/tmp"))
            home.chmod(0o755)
            homes.append(home)
            overrides["tasksDir"] = str(home)
        worker = start_worker_process(
            platform or shared_platform,
            workdir or tmp_path / f"worker-{len(made)}",
            key=signing_key,
            env=env,
            **overrides,
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
            print(f"\n===== platform output (tail) =====\n{shared_platform.output()[-6000:]}")
