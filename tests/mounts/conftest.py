"""Fixtures of the mounts tests: real platform, real ``tcworker run`` processes (the e2e harness),
and a local HTTP server for URL content."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess, clean_env, worker_config

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    signing_key: Path,
    shared_platform: PlatformProcess,
    submitter: Submitter,
) -> Iterator[WorkerFactory]:
    """``start_worker(workdir=..., **config)``: a ``tcworker run`` for this test's queue. Giving the
    same ``workdir`` twice restarts a worker on the same caches / downloads."""
    made: list[WorkerProcess] = []

    def factory(*, workdir: Path | None = None, **overrides: Any) -> WorkerProcess:
        wd = workdir or tmp_path / f"worker-{len(made)}"
        wd.mkdir(parents=True, exist_ok=True)
        overrides.setdefault("workerType", submitter.worker_type)
        config = worker_config(
            shared_platform.root_url, shared_platform.root_access_token, wd, signing_key, **overrides
        )
        worker = WorkerProcess(wd, config, clean_env())
        made.append(worker)
        return worker.start()

    try:
        yield factory
    finally:
        for worker in made:
            worker.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            for worker in made:
                print(f"\n===== worker {worker.worker_id} output =====\n{worker.tail(20000)}")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, base URL): a real HTTP server on 127.0.0.1 serving the directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
