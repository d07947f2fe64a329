"""Shared pytest fixtures: a real platform server process, a free-port helper, CI detection.

Kept small and generic on purpose: every test area imports from here, so area-specific helpers
live in that area's own directory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from platformproc import PlatformProcess
except ImportError:  # tests/ imported as a package (rootdir on sys.path instead of tests/)
    from tests.platformproc import PlatformProcess  # type: ignore[no-redef]


def in_ci() -> bool:
    """True when env CI is set to a true value: missing infrastructure must then fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail in CI (the project's rule for missing infrastructure)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0 where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
