"""Superseding test services: a superseder on 127.0.0.1, and the platform behind a proxy that
answers ``reportException(reason=superseded)`` as the real queue does since Taskcluster v40.

Both are aiohttp servers with async ``start`` / ``stop``: async tests await them; tests that block
in the official sync client run them on a loop thread of their own with ``in_background``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

WORKER_GROUP = "tcw-sup-wg"
WORKER = {"clientId": "tcw-test/docker-worker", "accessToken": "docker-worker-token-0123456789abcdefghijkl"}
# What a real worker holds: claim, identify itself, expand roles; nothing else (in particular no cancel-task).
WORKER_SCOPES = [
    "queue:claim-work:tcw-sup/*",
    "queue:claim-task:tcw-sup/*",
    f"queue:worker-id:{WORKER_GROUP}/*",
    "auth:expand-scopes",
]


class _AsyncServer(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


ServerT = TypeVar("ServerT", bound=_AsyncServer)


@contextmanager
def in_background(server: ServerT) -> Iterator[ServerT]:
    """Run ``server`` on an event loop in a thread of its own while the block runs (sync tests)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=type(server).__name__, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


class Superseder:
    """A superseder service on 127.0.0.1: ``GET /<key>?taskId=…`` answers ``{"supersedes": lists[key]}``.

    Special keys give the failure modes: ``status500``, ``notjson``, ``nolist``, ``slow`` (sleeps
    ``slow_seconds``), ``raw`` (answers ``raw_body`` verbatim). Every request's query is recorded.
    """

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.raw_body = b""
        self.slow_seconds = 2.0
        self._runner: Any = None
        self.base_url = ""

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        key = request.match_info["key"]
        self.requests.append((key, dict(request.query)))
        if key == "status500":
            return web.Response(status=500, text="boom")
        if key == "notjson":
            return web.Response(text="<html>not json</html>")
        if key == "nolist":
            return web.json_response({"supersedes": "nope"})
        if key == "slow":
            await asyncio.sleep(self.slow_seconds)
            return web.json_response({"supersedes": []})
        if key == "raw":
            return web.Response(body=self.raw_body, content_type="application/json")
        return web.json_response({"supersedes": self.lists.get(key, [])})

    async def start(self) -> Superseder:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{key}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"

    def asked_for(self, key: str) -> list[str | None]:
        """The taskId of every request made for ``key``, in order."""
        return [query.get("taskId") for k, query in self.requests if k == key]



class RejectSupersededProxy:
    """An HTTP proxy in front of the platform that answers like the real queue since Taskcluster v40:
    ``reportException`` with reason ``superseded`` → 400. Everything else is forwarded unchanged
    (Host header included, so Hawk signatures made for the proxy's address still verify)."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.rejected: list[str] = []
        self._runner: Any = None
        self.root_url = ""

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web

        body = await request.read()
        if request.method == "POST" and request.path.endswith("/exception"):
            try:
                reason = json.loads(body).get("reason")
            except ValueError:
                reason = None
            if reason == "superseded":
                self.rejected.append(request.path)
                return web.json_response(
                    {
                        "code": "InputValidationError",
                        "message": "Schema Validation Failed: reason must be equal to one of the allowed values",
                        "requestInfo": {"method": "reportException"},
                    },
                    status=400,
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP - {"host"}}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                # Hawk signs the content type: add none that the client did not send.
                skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
            ) as resp,
        ):
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in self.HOP}
            return web.Response(status=resp.status, body=data, headers=out)

    async def start(self) -> RejectSupersededProxy:
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.root_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
