"""Fixtures every area that runs real ``tcworker run`` processes shares (e2e, livelog, mounts,
interactive): the session's signing key, a submitter on a task queue of its own, and the report
hook that lets a fixture know whether its test failed (to print process output then).

Registered for the whole suite by ``tests/conftest.py``; an area's own conftest keeps only what
differs (its ``start_worker``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import new_signing_key


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
