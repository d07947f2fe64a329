"""Fixtures of the engine contract suite: one real engine per parameter, initialised on a real
config, and a sandbox prepared from it (destroyed at teardown, whatever the test did)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.engines import host_dirs, make_config, run_context
from helpers.logs import RecordingLog

from tcworker.engines import create_engine

HOST_ENGINES = ["simple", "multiuser"]


def engine_params() -> list[Any]:
    params: list[Any] = list(HOST_ENGINES)
    if importlib.util.find_spec("tcworker.engines.docker.engine") is None:
        params.append(
            pytest.param(
                "docker",
                marks=pytest.mark.skip(reason="tcworker.engines.docker.engine does not exist yet (engineer H5)"),
            )
        )
    else:
        params.append(
            pytest.param(
                "docker",
                marks=pytest.mark.skip(
                    reason="the docker engine runs commands in containers (needs dockerd and an image); "
                    "its contract suite is tests/docker/test_docker_sandbox.py, since these cases use "
                    "host tools (python3, env, mkfifo) and host paths"
                ),
            )
        )
    return params


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    with host_dirs() as root:
        yield root


@pytest.fixture(params=engine_params())
async def engine(request: pytest.FixtureRequest, scratch_root: Path) -> AsyncIterator[Any]:
    name = request.param
    if name == "multiuser" and os.geteuid() != 0:
        pytest.skip("the multiuser engine needs root")
    config = make_config(scratch_root, name)
    eng = create_engine(name)
    eng.kill_grace = 1.0
    await eng.initialise(config)
    eng.test_config = config
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
