"""Fixtures for the docker feature modules (encryptedEnv keys; the platform comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from helpers.gpg import GpgKey, make_gpg_key
from helpers.platformproc import PlatformProcess
from helpers.superseding import WORKER, WORKER_SCOPES, RejectSupersededProxy, Superseder


@pytest.fixture(scope="session")
def gpg_key() -> Iterator[GpgKey]:
    """An ed25519/cv25519 worker key (fast to make); shared by the session."""
    yield from make_gpg_key("future-default")


@pytest.fixture(scope="session")
def other_gpg_key() -> Iterator[GpgKey]:
    """A second key: messages encrypted to it must not decrypt with the worker's key."""
    yield from make_gpg_key("future-default")


@pytest.fixture
async def superseder() -> AsyncIterator[Superseder]:
    """A superseder HTTP service on 127.0.0.1 for one test."""
    server = await Superseder().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def sup_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One local platform per test module, with a worker client holding only what a worker holds."""
    proc = PlatformProcess(
        tmp_path_factory.mktemp("sup-platform") / "data",
        clients=[{**WORKER, "scopes": WORKER_SCOPES}],
        roles=[
            {
                "roleId": "project:tcw-docker",
                "scopes": ["docker-worker:cache:*", "docker-worker:capability:privileged"],
            }
        ],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
async def reject_proxy(sup_platform: PlatformProcess) -> AsyncIterator[RejectSupersededProxy]:
    """The platform behind a proxy that refuses reason ``superseded`` like the real queue."""
    proxy = await RejectSupersededProxy(sup_platform.root_url).start()
    try:
        yield proxy
    finally:
        await proxy.stop()
