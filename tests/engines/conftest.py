"""Fixtures of the engine contract suite: one real engine per parameter, initialised on a real
config, and a sandbox prepared from it (destroyed at teardown, whatever the test did).

Every case runs on every engine (``simple``, ``multiuser``, ``docker``) unless it is marked
``@pytest.mark.engines(...)`` with the engines it can run on at all: a case that can never run on an
engine is not generated for it, instead of being skipped there. An engine whose host lacks what it
needs (root and useradd for multiuser, a Docker daemon and the busybox test image for docker) is
skipped with the reason, and fails under ``CI=true`` (``helpers.ci.skip_or_fail``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ci import require_multiuser_host
from helpers.dockerimage import TEST_IMAGE
from helpers.engines import KILL_GRACE, host_dirs, make_config, run_context
from helpers.logs import RecordingLog

from tcworker.config import WorkerConfig
from tcworker.engines import create_engine

ENGINES = ("simple", "multiuser", "docker")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engines(*names, why=...): the only engines a contract case can run on at all; the others never "
        "get the case (why says what makes it impossible there)",
    )
    config.addinivalue_line(
        "markers",
        "engine_bug(name, reason=...): the case fails on engine `name` because of a known engine bug "
        "(strict xfail there: it must start failing the suite once the bug is fixed)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_name" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("engines")
    if only is not None:
        assert only.kwargs.get("why"), f"{metafunc.definition.nodeid}: engines(...) needs why="
    names = list(only.args) if only else list(ENGINES)
    unknown = set(names) - set(ENGINES)
    assert not unknown, f"{metafunc.definition.nodeid}: unknown engines {sorted(unknown)}"
    bugs = {m.args[0]: m.kwargs["reason"] for m in metafunc.definition.iter_markers("engine_bug")}
    params = [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=bugs[name])) if name in bugs else name
        for name in names
    ]
    metafunc.parametrize("engine_name", params, indirect=True)


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    with host_dirs() as root:
        yield root


@pytest.fixture
def engine_name(request: pytest.FixtureRequest) -> str:
    """The engine of this case; its host prerequisites are checked here (skip_or_fail)."""
    name = str(request.param)
    if name == "multiuser":
        require_multiuser_host()
    elif name == "docker":
        request.getfixturevalue("test_image")  # dockerd answers and the busybox image exists
    return name


@pytest.fixture
def engine_config(engine_name: str, scratch_root: Path) -> WorkerConfig:
    if engine_name == "docker":
        # Generic-worker payloads run in the config's dockerImage: the busybox test image.
        return make_config(
            scratch_root,
            engine_name,
            dockerImage=TEST_IMAGE,
            cachesDir=str(scratch_root / "caches"),
            downloadsDir=str(scratch_root / "downloads"),
        )
    return make_config(scratch_root, engine_name)


@pytest.fixture
async def engine(engine_name: str, engine_config: WorkerConfig) -> AsyncIterator[Any]:
    eng = create_engine(engine_name)
    eng.kill_grace = KILL_GRACE
    await eng.initialise(engine_config)
    eng.test_config = engine_config
    try:
        yield eng
    finally:
        await eng.shutdown()


@pytest.fixture
async def sandbox(engine: Any) -> AsyncIterator[Any]:
    box = await engine.prepare(run_context(RecordingLog()))
    try:
        yield box
    finally:
        await box.destroy()
