"""What the worker sends on the wire: every ``createArtifact`` body validates against the official
request schema and carries no ``contentLength`` (issue 8).

The real queue (v106) answers ``finishArtifact`` with 500 whenever ``createArtifact`` carried the
optional ``contentLength`` (its artifact-created message schema lacks the field), so every task
with artifacts would end ``exception/resource-unavailable`` there. A recording reverse proxy sits
between a real ``tcworker run`` and the platform and keeps every request body the worker sends.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(180)

CREATE_ARTIFACT = re.compile(r"^/api/queue/v1/task/[^/]+/runs/\d+/artifacts/.+$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def official_schema(name: str) -> dict[str, Any]:
    """The official resolved request schema: the shared upstream copy beside the repository (CI),
    the machine's copy, or the copy tcworker ships (taken from the same monorepo release)."""
    repo = Path(__file__).resolve().parents[2]
    for root in (repo.parent / "shared" / "upstream" / "queue-schemas" / "resolved" / "queue",
                 Path("/work/shared/upstream/queue-schemas/resolved/queue")):
        if (root / name).exists():
            return dict(json.loads((root / name).read_text()))
    return dict(json.loads((repo / "tcworker" / "schemas" / "queue" / "queue" / name).read_text()))


Hold = Callable[[str, str, bytes], float]


class RecordingProxy:
    """An aiohttp reverse proxy on 127.0.0.1 that forwards everything to ``upstream`` unchanged
    (Host header included, so Hawk signatures still verify) and records request bodies, and in
    ``events`` when each request arrived and when its answer went back. ``hold(method, path,
    body)``: seconds to keep a request before forwarding it (a slow queue for that call)."""

    def __init__(self, upstream: str, hold: Hold | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.events: list[tuple[str, str, str, bytes]] = []  # ("request" | "answer", method, path, body)
        self.url = ""
        self._hold = hold
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def requests(self) -> list[tuple[str, str, bytes]]:
        """(method, path, body) of every request, in the order they arrived."""
        return [(method, path, body) for kind, method, path, body in self.events if kind == "request"]

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        assert self._ready.wait(10), "recording proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession(auto_decompress=False) as self._session:
            self._ready.set()
            await self._stop.wait()
        await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.events.append(("request", request.method, request.path, body))
        if self._hold is not None and (delay := self._hold(request.method, request.path, body)):
            await asyncio.sleep(delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body,
            headers=headers,
            skip_auto_headers={"Content-Type"},  # none of aiohttp's own: Hawk hashes the Content-Type
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            self.events.append(("answer", request.method, request.path, body))
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if "Content-Encoding" in upstream.headers:
                out["Content-Encoding"] = upstream.headers["Content-Encoding"]
            return web.Response(status=upstream.status, body=data, headers=out)


@pytest.fixture
def proxy(shared_platform: PlatformProcess) -> Iterator[RecordingProxy]:
    with RecordingProxy(shared_platform.root_url) as p:
        yield p


def test_create_artifact_bodies_validate_and_never_carry_content_length(
    submitter: Submitter, start_worker: Any, proxy: RecordingProxy
) -> None:
    worker = start_worker(rootURL=proxy.url)
    task_id = submitter.create(
        {
            "command": [["sh", "-c", "mkdir -p out/d && echo one > out/a.txt && echo two > out/d/b.json"]],
            "maxRunTime": 60,
            "artifacts": [
                {"type": "file", "path": "out/a.txt", "name": "public/a.txt"},
                {"type": "directory", "path": "out/d", "name": "public/d"},
                {"type": "file", "path": "missing.txt", "name": "public/missing.txt", "optional": True},
            ],
        }
    )
    run = submitter.wait_run(task_id, timeout=90, worker=worker)
    assert run["state"] == "completed", run
    bodies = [
        json.loads(body)
        for method, path, body in proxy.requests
        if method == "POST" and CREATE_ARTIFACT.match(path) and task_id in path
    ]
    kinds = sorted(b["storageType"] for b in bodies)
    assert kinds.count("object") >= 3, kinds  # backing log, a.txt, d/b.json
    assert "error" in kinds and "link" in kinds, kinds
    schema = official_schema("post-artifact-request.json")
    for body in bodies:
        jsonschema.validate(body, schema)
        assert "contentLength" not in body, body


def _artifact_call(task_id: str, method: str, path: str, body: bytes) -> str | None:
    """``"<storageType> <name>"`` for a ``createArtifact`` of ``task_id``, ``"report"`` for its
    ``reportCompleted``, else ``None``."""
    name = unquote(path)
    if task_id not in name:
        return None
    if method == "POST" and CREATE_ARTIFACT.match(path):
        return f"{json.loads(body)['storageType']} {name.rsplit('/artifacts/', 1)[1]}"
    if method == "POST" and name.endswith("/completed"):
        return "report"
    return None


def test_live_log_link_goes_out_after_the_backing_log_artifact_and_before_the_report(
    submitter: Submitter, start_worker: Any, proxy: RecordingProxy
) -> None:
    """The order of a run's artifact calls as the queue receives them: the live log's reference,
    the backing log's ``createArtifact`` (on the report's path), then the link that replaces the
    reference (held until that artifact exists, so it never delays it), all before the report."""
    worker = start_worker(rootURL=proxy.url)
    task_id = submitter.create({"command": [["sh", "-c", "echo hello"]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=90, worker=worker)
    assert run["state"] == "completed", run
    seen = [c for m, p, b in proxy.requests if (c := _artifact_call(task_id, m, p, b))]
    assert seen == [
        "reference public/logs/live.log",
        "object public/logs/live_backing.log",
        "link public/logs/live.log",
        "report",
    ], seen


def test_a_slow_live_log_reference_does_not_hold_the_backing_log_back(
    submitter: Submitter, start_worker: Any, shared_platform: PlatformProcess
) -> None:
    """The queue answers the live log's ``reference`` late: the backing log's upload starts
    without waiting for that answer (a short command no longer waits for it), the link still
    replaces the reference only after it, and the report comes last."""

    def hold(method: str, path: str, body: bytes) -> float:
        is_reference = method == "POST" and CREATE_ARTIFACT.match(path) and b'"reference"' in body
        return 2.0 if is_reference else 0.0

    with RecordingProxy(shared_platform.root_url, hold=hold) as proxy:
        worker = start_worker(rootURL=proxy.url)
        task_id = submitter.create({"command": [["sh", "-c", "echo hello"]], "maxRunTime": 60})
        run = submitter.wait_run(task_id, timeout=90, worker=worker)
    assert run["state"] == "completed", run
    seen = [
        f"{kind} {call}"
        for kind, m, p, b in proxy.events
        if (call := _artifact_call(task_id, m, p, b)) and (kind == "request" or call.startswith("reference"))
    ]
    assert seen == [
        "request reference public/logs/live.log",
        "request object public/logs/live_backing.log",
        "answer reference public/logs/live.log",
        "request link public/logs/live.log",
        "request report",
    ], seen
    content, _ = submitter.download(task_id, 0, "public/logs/live.log")  # the link to the backing log
    assert b"hello" in content
