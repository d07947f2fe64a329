"""Fixtures for the whole suite: real platform server processes, and dockerd with its test image.

Only fixtures live here; the functions and classes tests share are in ``tests/helpers/`` (imported
as ``from helpers.<module> import …``), and each area's own fixtures in that area's conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.dockerfixtures import docker_client, test_image  # noqa: F401 - fixtures for every area
from helpers.platformproc import PlatformProcess
from helpers.workerfixtures import (  # noqa: F401 - fixtures and hook for every area
    pytest_runtest_makereport,
    signing_key,
    submitter,
    worker_factory,
)

PlatformFactory = Callable[..., PlatformProcess]


@pytest.fixture
def platform_server(tmp_path: Path) -> Iterator[PlatformFactory]:
    """Factory: `platform_server(claim_timeout=3, clients=[...])` starts a fresh server.

    Every server it made is stopped at teardown, whatever the test did to it.
    """
    made: list[PlatformProcess] = []

    def factory(**kwargs: Any) -> PlatformProcess:
        proc = PlatformProcess(tmp_path / f"platform-{len(made)}", **kwargs)
        made.append(proc)
        return proc.start()

    try:
        yield factory
    finally:
        for proc in made:
            proc.stop()


@pytest.fixture
def platform(platform_server: PlatformFactory) -> PlatformProcess:
    """A fresh platform (own data dir) for one test; root credentials via `.root_credentials`."""
    return platform_server()


@pytest.fixture(scope="session")
def shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One platform for the whole session; tests must isolate themselves (own taskQueueId)."""
    proc = PlatformProcess(tmp_path_factory.mktemp("shared-platform") / "data")
    try:
        yield proc.start()
    finally:
        proc.stop()
