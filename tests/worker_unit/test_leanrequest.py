"""The official client's request helper without eager debug strings (tcworker/tcapi/leanrequest.py)
sends exactly what the original sends, to a real aiohttp server, and still logs when asked."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
import taskcluster.aio
from aiohttp import web
from taskcluster.aio import asyncutils

from tcworker.tcapi import clients, leanrequest


async def _serve(seen: list[dict[str, Any]]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.raw_path,
                "headers": {k: v for k, v in request.headers.items() if k not in ("Authorization",)},
                "hawk": request.headers.get("Authorization", "").startswith("Hawk "),
                "body": await request.read(),
            }
        )
        if request.path.endswith("/redirect"):
            raise web.HTTPFound("/elsewhere")
        return web.json_response({"status": {"taskId": "abc"}, "seen": len(seen)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    return runner, f"http://127.0.0.1:{port}"


async def _calls(root: str) -> list[Any]:
    async with aiohttp.ClientSession() as session:
        queue = taskcluster.aio.Queue(
            {"rootUrl": root, "credentials": {"clientId": "c", "accessToken": "t" * 44}}, session=session
        )
        out = [
            await queue.status("abc"),
            await queue.createArtifact("abc", "0", "public/a b%2F.txt", {"storageType": "reference", "url": "x"}),
            await queue.listArtifacts("abc", "0", query={"limit": 5}),
        ]
        response = await leanrequest.make_single_http_request("GET", f"{root}/redirect", None, {}, session=None)
        out.append(response.status)  # no redirect followed, implicit session closed
        return out


async def test_same_requests_and_answers_as_the_official_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert asyncutils.makeSingleHttpRequest is leanrequest.make_single_http_request  # clients installed it
    assert clients.RETRIES
    seen_lean: list[dict[str, Any]] = []
    runner, root = await _serve(seen_lean)
    try:
        lean = await _calls(root)
        seen_original: list[dict[str, Any]] = []
        runner2, root2 = await _serve(seen_original)
        try:
            import importlib

            pristine = importlib.reload(importlib.import_module("taskcluster.aio.asyncutils"))
            original_helper = pristine.makeSingleHttpRequest
            assert original_helper is not leanrequest.make_single_http_request
            monkeypatch.setattr(asyncutils, "makeSingleHttpRequest", original_helper)
            original = await _calls(root2)
        finally:
            await runner2.cleanup()
            leanrequest.install()
    finally:
        await runner.cleanup()
    for answer in (lean, original):
        answer[:3] = [{k: v for k, v in a.items() if k != "seen"} for a in answer[:3]]
    assert lean == original
    for a, b in zip(seen_lean, seen_original, strict=True):
        a["headers"].pop("Host"), b["headers"].pop("Host")
        assert a == b


async def test_debug_messages_only_when_debug_is_on(caplog: pytest.LogCaptureFixture) -> None:
    class Loud(dict):
        def __str__(self) -> str:
            raise AssertionError("formatted although debug logging is off")

    seen: list[dict[str, Any]] = []
    runner, root = await _serve(seen)
    try:
        async with aiohttp.ClientSession() as session:
            with caplog.at_level(logging.INFO, logger=asyncutils.__name__):
                await leanrequest.make_single_http_request("GET", f"{root}/x", None, Loud(), session=session)
            assert not caplog.records
            with caplog.at_level(logging.DEBUG, logger=asyncutils.__name__):
                await leanrequest.make_single_http_request("POST", f"{root}/y", "{}", {"A": "b"}, session=session)
    finally:
        await runner.cleanup()
    messages = [r.getMessage() for r in caplog.records]
    assert "Making a POST request to " + f"{root}/y" in messages
    assert any(m.startswith("Received HTTP Payload: {") for m in messages)
