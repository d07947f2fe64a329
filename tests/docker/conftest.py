"""Fixtures for the docker engine's tests: initialised engines on the busybox test image.

``docker_client`` and ``test_image`` (a reachable dockerd, or skip_or_fail) come from
``helpers.dockerfixtures`` through ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.dockerruns import engine_config

from tcworker.engines.docker.engine import DockerEngine

pytestmark = pytest.mark.docker


EngineFactory = Callable[..., Awaitable[DockerEngine]]


@pytest.fixture
async def make_engine(tmp_path: Path, test_image: str) -> AsyncIterator[EngineFactory]:
    """``await make_engine(**config_overrides)``: an initialised engine, shut down at teardown."""
    made: list[DockerEngine] = []

    async def factory(**overrides: Any) -> DockerEngine:
        engine = DockerEngine()
        await engine.initialise(engine_config(tmp_path, **overrides))
        made.append(engine)
        return engine

    yield factory
    for engine in made:
        await engine.shutdown()
