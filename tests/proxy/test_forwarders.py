"""docker-worker's relengAPIProxy / testdroidProxy as configured forwarders, with a real upstream
HTTP server, the worker and a container as real processes: the container reaches the upstream at
``http://relengapi`` / ``http://testdroid`` with the worker's token added (never inside the
container); without the config key, or without a relengapi permission scope, malformed-payload."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

TOKEN = "relengapi-token-s3cr3t-9921"


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        # The body never carries the token itself: it says whether the right one arrived.
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = json.dumps({"path": self.path, "token_ok": ok}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_relengapi_and_testdroid_forward_with_the_workers_token(
    start_worker: Any,
    image: str,
    upstream: str,
) -> None:
    worker, sub = start_worker(
        engine="docker",
        relengAPIProxy={"upstream": upstream, "token": TOKEN},
        testdroidProxy={"upstream": upstream + "/droid"},
    )
    script = (
        "wget -q -O - 'http://relengapi/tooltool/sha512/abc?x=1'; echo; "
        "wget -q -O - http://testdroid/devices; echo; env | grep -c s3cr3t; echo DONE"
    )
    task_id = sub.create(
        {
            "image": image,
            "command": ["/bin/sh", "-c", script],
            "maxRunTime": 60,
            "features": {"relengAPIProxy": True, "testdroidProxy": True},
        },
        scopes=["docker-worker:relengapi-proxy:tooltool.download.public"],
    )
    run = sub.wait_run(task_id, worker=worker)
    log = sub.log(task_id)
    assert run["state"] == "completed", sub.explain(task_id)
    assert '{"path": "/tooltool/sha512/abc?x=1", "token_ok": true}' in log, log[-2000:]
    assert '{"path": "/droid/devices", "token_ok": false}' in log, log[-2000:]  # no token configured
    assert TOKEN not in log
    assert "\n0\r\nDONE" in log or "\n0\nDONE" in log, log[-1000:]  # not in the container's env


def test_missing_config_or_scope_is_malformed_payload(start_worker: Any, image: str, upstream: str) -> None:
    worker, sub = start_worker(engine="docker", relengAPIProxy={"upstream": upstream, "token": TOKEN})
    no_config = sub.create(
        {"image": image, "command": ["true"], "maxRunTime": 60, "features": {"testdroidProxy": True}}
    )
    run = sub.wait_run(no_config, worker=worker)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "needs the worker config key testdroidProxy" in sub.log(no_config)
    no_scope = sub.create(
        {"image": image, "command": ["true"], "maxRunTime": 60, "features": {"relengAPIProxy": True}},
        scopes=["docker-worker:relengapi-proxy:*"],
    )
    run = sub.wait_run(no_scope, worker=worker)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload")
    assert "docker-worker:relengapi-proxy:<permission>" in sub.log(no_scope)
