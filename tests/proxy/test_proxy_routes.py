"""The proxy's HTTP behaviour against a real upstream HTTP server (an aiohttp app on 127.0.0.1
standing in for a Taskcluster service): 5xx retried then passed through, transport failure → 500,
``PUT /credentials`` (200 / 405 / 400) and the swap it makes, headers, redirects not followed, the
Hawk header verifiable with mohawk, peer admission by uid."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import mohawk
import pytest
from aiohttp import web

from tcworker.proxy.peers import PeerPolicy, peer_uid
from tcworker.proxy.server import ProxyServer, TaskclusterRoutes, new_upstream_session
from tcworker.proxy.signing import ProxyCredentials, RequestSigner

KEYS = {"first": "first-secret-key", "second": "second-secret-key"}


class Upstream:
    """Answers 503 ``fail`` times, then echoes who signed the request (verified with mohawk)."""

    def __init__(self) -> None:
        self.fail = 0
        self.calls = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        if request.path.endswith("/redirect"):
            raise web.HTTPSeeOther("http://elsewhere.invalid/x")
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503, text="busy")
        header = request.headers["Authorization"]
        client_id = header.split('id="', 1)[1].split('"', 1)[0]
        mohawk.Receiver(
            lambda i: {"id": i, "key": KEYS[i], "algorithm": "sha256"},
            header,
            f"http://{request.host}{request.path_qs}",
            request.method,
            accept_untrusted_content=True,
            seen_nonce=lambda *a: False,
        )
        return web.json_response(
            {"signedBy": client_id, "body": (await request.text())}, headers={"X-Up": "1"}
        )


@pytest.fixture
async def setup() -> AsyncIterator[tuple[str, Upstream, RequestSigner]]:
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    signer = RequestSigner(ProxyCredentials("first", KEYS["first"]), ["queue:get-task:*"])
    session = new_upstream_session()
    proxy = ProxyServer({"": TaskclusterRoutes(f"http://127.0.0.1:{port}", signer, session)}, PeerPolicy())
    await proxy.listen("127.0.0.1", 0)
    proxy_port = proxy._servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{proxy_port}", upstream, signer
    finally:
        await proxy.close()
        await session.close()
        await runner.cleanup()


async def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s, s.request(method, url, allow_redirects=False, **kw) as r:
        return r.status, dict(r.headers), await r.text()


async def test_signed_forward_headers_and_5xx_retries(setup: Any) -> None:
    proxy, upstream, _ = setup
    upstream.fail = 2
    status, headers, body = await call("POST", f"{proxy}/api/queue/v1/task/abc?x=1", data=b'{"a": 1}')
    assert status == 200 and upstream.calls == 3, (status, body)
    assert json.loads(body) == {"signedBy": "first", "body": '{"a": 1}'}
    assert headers["X-Up"] == "1"
    assert headers["X-Taskcluster-Endpoint"].endswith("/api/queue/v1/task/abc?x=1")
    assert headers["X-Taskcluster-Proxy-Perm-ClientId"] == "first"
    assert json.loads(headers["X-Taskcluster-Authorized-Scopes"]) == ["queue:get-task:*"]
    upstream.fail = 100  # more than the retries: the last 5xx comes back as it is
    status, _, body = await call("GET", f"{proxy}/queue/v1/task/abc")
    assert (status, body) == (503, "busy")
    status, headers, _ = await call("GET", f"{proxy}/api/queue/v1/redirect")
    assert status == 303 and headers["Location"] == "http://elsewhere.invalid/x"  # not followed
    assert (await call("GET", f"{proxy}/api/queue"))[0] == 404
    assert (await call("GET", f"{proxy}/bad_host!/x"))[0] == 404


async def test_credentials_endpoint_swaps_what_signs(setup: Any) -> None:
    proxy, upstream, signer = setup
    assert (await call("GET", f"{proxy}/credentials"))[0] == 405
    assert (await call("PUT", f"{proxy}/credentials", data=b"not json"))[0] == 400
    new = {"clientId": "second", "accessToken": KEYS["second"], "certificate": ""}
    assert (await call("PUT", f"{proxy}/credentials", data=json.dumps(new).encode()))[0] == 200
    status, _, body = await call("GET", f"{proxy}/api/queue/v1/task/abc")
    assert status == 200 and json.loads(body)["signedBy"] == "second"
    signer.update(ProxyCredentials("first", KEYS["first"]))  # what the worker does after a reclaim
    assert json.loads((await call("GET", f"{proxy}/api/queue/v1/task/abc"))[2])["signedBy"] == "first"


async def test_bewit_and_transport_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again below: nothing listens there
    signer = RequestSigner(ProxyCredentials("first", KEYS["first"]))
    session = new_upstream_session()
    proxy = ProxyServer(
        {"": TaskclusterRoutes(f"http://127.0.0.1:{dead_port}", signer, session)}, PeerPolicy()
    )
    await proxy.listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{proxy._servers[0].sockets[0].getsockname()[1]}"
    try:
        status, headers, body = await call(
            "POST", f"{url}/bewit", data=b"http://h.example/api/queue/v1/x?y=1"
        )
        assert status == 303 and headers["Location"] == body and "?y=1&bewit=" in body
        status, _, body = await call("GET", f"{url}/api/queue/v1/task/abc")
        assert status == 500 and body.startswith("Failed during proxy request:")
    finally:
        await proxy.close()
        await session.close()


async def test_peer_uid_of_our_own_connection() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    try:
        ip, port = client.getsockname()
        assert peer_uid(ip, port) == os.geteuid()
        other_users_only = PeerPolicy(allowed_uids=(os.geteuid() + 12345,)).refusal((ip, port))
        if os.geteuid() == 0:
            assert other_users_only is None  # root is always admitted (the worker itself)
        else:
            assert "only this task's user" in str(other_users_only)
        assert PeerPolicy(allowed_network="10.99.0.0/16").refusal(("10.99.1.2", 1)) is None
        assert "not from this task" in str(
            PeerPolicy(allowed_network="10.99.0.0/16").refusal(("10.98.1.2", 1))
        )
    finally:
        client.close()
        server.close()
