"""preloadedCaches adoption and one shared download for concurrent tasks needing the same content."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def test_preloaded_cache_is_adopted_as_a_warm_cache(start_worker, submitter, tmp_path: Path) -> None:
    baked = tmp_path / "image" / "toolchain"
    baked.mkdir(parents=True)
    (baked / "version").write_text("baked-in-the-image")
    worker = start_worker(preloadedCaches={"toolchain": str(baked)})
    task_id = submitter.create(
        {
            "command": [["/bin/sh", "-c", "cat tc/version"]],
            "maxRunTime": 30,
            "mounts": [{"directory": "tc", "cacheName": "toolchain"}],
        },
        scopes=["generic-worker:cache:toolchain"],
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", log
    assert "baked-in-the-image" in log and "Moving existing writable directory cache toolchain" in log


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0
    body = b"shared content " * 1000

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        time.sleep(1.5)  # long enough for the second task to ask while the first downloads
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def counting_server() -> Iterator[tuple[type[_Counting], str]]:
    handler = type("Handler", (_Counting,), {"hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}/blob"
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_tasks_share_one_download(start_worker, submitter, counting_server) -> None:
    handler, url = counting_server
    worker = start_worker(capacity=2)
    payload = {
        "command": [["/bin/sh", "-c", "wc -c < f"]],
        "maxRunTime": 60,
        "mounts": [{"file": "f", "content": {"url": url}}],
    }
    tasks = [submitter.create(payload) for _ in range(2)]
    for task_id in tasks:
        run = submitter.wait_run(task_id, worker=worker)
        assert run["state"] == "completed", submitter.log(task_id)
        assert "15000" in submitter.log(task_id)
    assert handler.hits == 1, f"{handler.hits} downloads for one content"


def test_orphans_of_a_crashed_worker_are_removed_at_start_up(start_worker, submitter, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    caches, downloads = workdir / "caches", workdir / "downloads"
    partial = downloads / ".partial-0123456789abcdef"
    unknown = caches / "generic-worker" / "lost" / "0123456789abcdef"
    unknown.mkdir(parents=True)
    (unknown / "stale").write_text("x")
    downloads.mkdir(parents=True)
    partial.write_bytes(b"half a download")
    worker = start_worker(workdir=workdir)
    task_id = submitter.create({"command": [["true"]], "maxRunTime": 30})
    assert submitter.wait_run(task_id, worker=worker)["state"] == "completed"
    assert not partial.exists() and not unknown.exists()
