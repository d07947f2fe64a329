"""Fixtures of the mounts tests: real platform, real ``tcworker run`` processes (the e2e harness),
and a local HTTP server for URL content."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.workerproc import WorkerProcess

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(worker_factory: WorkerFactory) -> WorkerFactory:
    """``start_worker(workdir=..., **config)``: see ``worker_factory``; giving the same ``workdir``
    twice restarts a worker on the same caches / downloads."""
    return worker_factory


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
