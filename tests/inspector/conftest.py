"""Fixtures for the inspector tests: a platform process, a real worker, and Debian's Chromium.

The platform is `tcworker queue serve` as a child process (tests/helpers/platformproc.py) with two extra
static clients: `inspector/limited` (may create tasks, may not cancel them: the 403 the page must
show) and nothing else special. Tasks are created with the official client. The worker is a real
`tcworker run` process (tests/helpers/workerproc.py). The browser is Debian's `chromium` driven by
Playwright; Playwright's own browser download is never used (no CDN is reachable). Without
chromium the browser tests skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.ci import skip_or_fail
from helpers.inspector import LIMITED, LIMITED_SCOPES
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.taskprocs import kill_marked
from helpers.workerproc import WorkerProcess, clean_env, new_signing_key, unique_worker_type, worker_config

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def iplatform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    proc = PlatformProcess(
        tmp_path_factory.mktemp("inspector-platform") / "data",
        clients=[{**LIMITED, "scopes": LIMITED_SCOPES}],
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def submitter(iplatform: PlatformProcess) -> Iterator[Submitter]:
    sub = Submitter(iplatform.queue(), iplatform.root_url, unique_worker_type(), iplatform.root_access_token)
    try:
        yield sub
    finally:
        kill_marked(sub.mark)


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_signing_key(tmp_path_factory.mktemp("inspector-keys") / "ed25519.key")


@pytest.fixture
def worker(
    tmp_path: Path, signing_key: Path, iplatform: PlatformProcess, submitter: Submitter
) -> Iterator[WorkerProcess]:
    """A real `tcworker run` (simple engine) serving this test's own task queue."""
    workdir = tmp_path / "worker"
    config = worker_config(
        iplatform.root_url,
        iplatform.root_access_token,
        workdir,
        signing_key,
        workerType=submitter.worker_type,
        # Reclaim every second so a task cancelled from the page is killed at once (a reclaim
        # answered 409 is how a worker learns of it) and the next run can be claimed.
        reclaimIntervalSecs=1,
    )
    proc = WorkerProcess(workdir, config, clean_env())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"{CHROMIUM} is missing (Debian package `chromium`, installed by .ci/run)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the `playwright` package is missing (pip install -e '.[test]')")
        raise
    with sync_playwright() as pw:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()
