"""A forwarding HTTP proxy that records the queue's answers to the worker (tests only).

The task's temporary credentials exist only in the worker and in the queue's `claimWork` answer,
so to make a task print *its own* access token the test puts this proxy between the worker and the
platform (worker `rootURL` = the proxy) and reads the credentials from the recorded answer. The
proxy forwards requests unchanged, `Host` header included, so Hawk signatures still verify.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class RecordingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.claims: list[dict[str, Any]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop: asyncio.Event | None = None

    def start(self) -> RecordingProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("recording proxy did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)

        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._forward(session, request)

        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await session.close()

    async def _forward(self, session: aiohttp.ClientSession, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
            # Hawk's payload hash covers the Content-Type: never add one the client did not send.
            skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
        ) as upstream:
            data = await upstream.read()
            if "/claim-work/" in request.path and upstream.status == 200:
                self.claims += json.loads(data).get("tasks", [])
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in HOP_BY_HOP - {"content-encoding"}
            }
            return web.Response(status=upstream.status, body=data, headers=out)

    def credentials_of(self, task_id: str) -> dict[str, str] | None:
        for claim in self.claims:
            if claim["status"]["taskId"] == task_id:
                return dict(claim["credentials"])
        return None
