"""Fixtures for the platform acceptance tests.

`pserver` is one session-wide server started with a `--clients` file (a client with a few scopes,
an issuer for temporary credentials, a role), so the scope tests exercise the YAML client
configuration too. Tests isolate themselves with a fresh taskQueueId (`queue_id`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import taskcluster
from helpers.platformapi import ISSUER, ISSUER_SCOPES, LIMITED, LIMITED_SCOPES, ROLE_ID, ROLE_SCOPES
from helpers.platformproc import PlatformProcess
from helpers.tasks import new_queue_id


@pytest.fixture(scope="session")
def pserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    proc = PlatformProcess(
        tmp_path_factory.mktemp("pserver") / "data",
        clients=[
            {**LIMITED, "scopes": LIMITED_SCOPES},
            {**ISSUER, "scopes": ISSUER_SCOPES},
        ],
        roles=[{"roleId": ROLE_ID, "scopes": ROLE_SCOPES}],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def queue_id() -> str:
    return new_queue_id()


@pytest.fixture
def root_queue(pserver: PlatformProcess) -> taskcluster.Queue:
    """Root-credentialed sync Queue with retries off: any 5xx is a server bug and must show at once."""
    return pserver.queue(maxRetries=0)


@pytest.fixture
def anon_queue(pserver: PlatformProcess) -> taskcluster.Queue:
    return pserver.queue(None, maxRetries=0)
