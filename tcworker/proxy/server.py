"""The proxy's aiohttp application and listeners: routing, forwarding with retries, admission.

One ``ProxyServer`` per run listens where the task can reach it (127.0.0.1 at the slot's port on
the host engines, the run's docker network gateway on port 80 for containers). Requests go to a
handler chosen by the ``Host`` header, so one listener on the gateway serves ``http://taskcluster``
and docker-worker's other proxies (``http://relengapi`` …) at once. ``TaskclusterRoutes`` follows
taskcluster-proxy's routes (``/api/<service>/<version>/<path>``, the legacy
``/<service>/<version>/<path>``, ``/<host.with.dots>/<path>``, ``/bewit``, ``/credentials``);
``Forwarder`` is a plain reverse proxy that adds a credential. Bodies are buffered (as upstream
does), upstream status, headers and body are passed back untouched (no decompression, redirects
not followed), and 5xx answers and connection failures are retried with the official client's
backoff. Everything runs in the worker's loop; a task opening many connections meets a per-run
connection cap (answered 503) instead of exhausting the worker's file descriptors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
from aiohttp import web
from taskcluster.utils import calculateSleepTime
from yarl import URL

from tcworker.proxy.peers import PeerPolicy
from tcworker.proxy.signing import ProxyCredentials, RequestSigner

log = logging.getLogger(__name__)

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_RETRIES = 5
MAX_CONNECTIONS = 256  # per run; more concurrent connections are answered 503 and closed
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Host",
    )
)
_API_PATH = re.compile(r"^/api/(?P<service>[^/]*)/(?P<version>[^/]*)/(?P<path>.*)$")
_HOSTNAME = re.compile(
    r"^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$"
)


def new_upstream_session(limit: int = 128) -> aiohttp.ClientSession:
    """The session proxies forward with: pooled, no transparent decompression, no cookie jar."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
    )


async def forward(
    session: aiohttp.ClientSession,
    request: web.BaseRequest,
    target: str,
    body: bytes,
    *,
    add_headers: Callable[[str, str], Mapping[str, str]],
    answer_headers: Mapping[str, str],
) -> web.Response:
    """Send ``request`` to ``target`` (retrying 5xx / connection errors) and mirror the answer.

    ``add_headers(method, url)`` is called for every attempt (a fresh Hawk header each time).
    """
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    headers.pop("Authorization", None)
    url = URL(target, encoded=True)
    last_error: BaseException | None = None
    for attempt in range(MAX_RETRIES + 1):
        if attempt:
            await asyncio.sleep(calculateSleepTime(attempt))
        attempt_headers = {**headers, **add_headers(request.method, target)}
        try:
            async with session.request(
                request.method, url, data=body or None, headers=attempt_headers, allow_redirects=False
            ) as upstream:
                data = await upstream.read()
                if upstream.status >= 500 and attempt < MAX_RETRIES:
                    log.info("proxy: %s %s answered %s; retrying", request.method, url.path, upstream.status)
                    continue
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                out.update(answer_headers)
                return web.Response(status=upstream.status, headers=out, body=data)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            last_error = e
            log.info("proxy: %s %s failed (%s); retrying", request.method, url.path, e)
    return web.Response(
        status=500,
        headers=dict(answer_headers),
        text=f"Failed during proxy request: {last_error!r}",
    )


class TaskclusterRoutes:
    """taskcluster-proxy's routes for one run, signing with ``signer``'s current credentials."""

    def __init__(self, root_url: str, signer: RequestSigner, session: aiohttp.ClientSession) -> None:
        self.root_url = root_url.rstrip("/")
        self.signer = signer
        self.session = session

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path == "/bewit" or path.startswith("/bewit/"):
            return await self._bewit(request)
        if path == "/credentials" or path.startswith("/credentials/"):
            return await self._credentials(request)
        headers = self.signer.identity_headers()
        target = self._target(path, request.rel_url.raw_query_string)
        if isinstance(target, web.Response):
            target.headers.update(headers)
            return target
        headers["X-Taskcluster-Endpoint"] = target
        body = await request.read()
        signer = self.signer
        return await forward(
            self.session,
            request,
            target,
            body,
            add_headers=lambda method, url: {"Authorization": signer.authorization(method, url)},
            answer_headers=headers,
        )

    def _target(self, path: str, query: str) -> str | web.Response:
        suffix = f"?{query}" if query else ""
        if path.startswith("/api"):
            m = _API_PATH.match(path)
            if m is None:
                return web.Response(status=404, text="invalid /api path")
            return f"{self.root_url}/api/{m['service']}/{m['version']}/{m['path']}{suffix}"
        service, _, rest = path.lstrip("/").partition("/")
        if not _HOSTNAME.match(service):
            return web.Response(
                status=404, text=f"Unkown taskcluster service: {service} is not a valid taskcluster service"
            )
        if "." in service:
            return f"https://{service}/{rest}{suffix}"
        version, _, api_path = rest.partition("/")
        return f"{self.root_url}/api/{service}/{version}/{api_path}{suffix}"

    async def _bewit(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = self.signer.identity_headers()
        url = (await request.text()).strip()
        parsed = URL(url)
        if not parsed.is_absolute() or parsed.scheme not in ("http", "https"):
            return web.Response(
                status=500, headers=headers, text=f"Error creating bewit url: not an absolute URL: {url!r}"
            )
        signed = self.signer.signed_url(url, 3600)
        headers["Location"] = signed
        return web.Response(status=303, headers=headers, text=signed)

    async def _credentials(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = self.signer.identity_headers()
        if request.method != "PUT":
            return web.Response(status=405, headers=headers)
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            return web.Response(status=400, headers=headers)
        self.signer.update(ProxyCredentials.from_taskcluster(body))
        return web.Response(status=200, headers=self.signer.identity_headers())


class Forwarder:
    """A reverse proxy to ``upstream`` that adds ``Authorization: Bearer <token>`` (relengapi …)."""

    def __init__(self, upstream: str, token: str, session: aiohttp.ClientSession, name: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._token = token
        self.session = session
        self.name = name

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        query = request.rel_url.raw_query_string
        target = self.upstream + request.rel_url.raw_path + (f"?{query}" if query else "")
        token = self._token
        body = await request.read()
        return await forward(
            self.session,
            request,
            target,
            body,
            add_headers=lambda method, url: {"Authorization": f"Bearer {token}"} if token else {},
            answer_headers={"X-Taskcluster-Endpoint": target},
        )


class _Refuse(asyncio.Protocol):
    """Answers one connection over the cap with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream socket's transport: uvloop's does not derive from asyncio.WriteTransport.
        transport = cast(asyncio.WriteTransport, transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 35\r\nConnection: close\r\n\r\n"
            b"too many connections to this proxy\n"
        )
        transport.close()


class ProxyServer:
    """One run's listeners: ``handlers`` by Host name (``""`` = any other host)."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        policy: PeerPolicy,
        *,
        max_connections: int = MAX_CONNECTIONS,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._handlers = dict(handlers)
        self._policy = policy
        self._max_connections = max_connections
        self._on_refused = on_refused
        self._admitted: weakref.WeakSet[Any] = weakref.WeakSet()
        # aiohttp's low-level server: every request goes to one handler anyway, and an
        # Application's router, middleware chain and per-request app bookkeeping only add calls.
        # Without a peer rule (simple engine) there is nothing to admit.
        entry = self._admit_then_dispatch if policy.restricted else self._dispatch
        server = web.Server(entry, request_factory=self._make_request, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False)
        self._servers: list[asyncio.base_events.Server] = []
        self.addresses: list[tuple[str, int]] = []

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
    ) -> web.BaseRequest:
        """Requests with the proxy's body limit (the low-level server's default is 1 MiB)."""
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=MAX_BODY_BYTES,
        )

    async def _admit_then_dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        """The peer check once per connection (``PeerPolicy``), then the handler for the Host."""
        transport = request.transport
        if transport is not None and transport in self._admitted:
            return await self._dispatch(request)
        peer = transport.get_extra_info("peername") if transport is not None else None
        reason = await asyncio.to_thread(self._policy.refusal, peer) if self._policy.restricted else None
        if reason is not None:
            if self._on_refused is not None:
                self._on_refused(reason)
            return web.Response(
                status=403, text=f"taskcluster-proxy: {reason}\n", headers={"Connection": "close"}
            )
        if transport is not None:
            self._admitted.add(transport)
        return await self._dispatch(request)

    def serve(self, hosts: Mapping[str, Handler]) -> None:
        """Add handlers by Host name (``""`` = any other host) while listening."""
        self._handlers.update(hosts)

    def unserve(self, hosts: list[str]) -> None:
        for host in hosts:
            self._handlers.pop(host, None)

    @property
    def serving(self) -> bool:
        return bool(self._handlers)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        handlers = self._handlers
        if len(handlers) == 1 and "" in handlers:  # one handler for every host: no Host to parse
            return await handlers[""](request)
        host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        handler = handlers.get(host) or handlers.get("")
        if handler is None:
            return web.Response(status=404, text=f"no proxy for host {host!r} in this task\n")
        return await handler(request)

    async def listen(self, host: str, port: int) -> None:
        """Start accepting on ``host:port`` (``OSError`` when the address is taken)."""
        if self._runner.server is None:
            await self._runner.setup()
        server = self._runner.server
        assert server is not None
        limit = self._max_connections

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= limit:
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(factory, host, port, reuse_address=True, backlog=512)
        self._servers.append(listener)
        self.addresses.append((host, port))

    async def close(self) -> None:
        """Stop listening and end every connection (in-flight requests get a short grace)."""
        for listener in self._servers:
            listener.close()
        await self._runner.cleanup()
        for listener in self._servers:
            try:
                await asyncio.wait_for(listener.wait_closed(), 5)
            except TimeoutError:
                log.warning("proxy listener on %s did not close in time", listener.sockets)
        self._servers.clear()
