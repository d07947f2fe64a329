"""The aiohttp application: error wrapper, the API dispatcher, data URLs, resolvers.

Request pipeline for ``/api/<service>/v1/<route>`` (spec §1): match the raw path → decode and
check params (400) → read the body (413 over 10 MB) → authenticate with Hawk (401) → parse
JSON (400 MalformedPayload) and validate it with defaults (400 InputValidationError) → handler,
which authorizes (403) and calls one service method. Every error leaves in the §1.5 shape; an
unexpected exception becomes a logged ``500 InternalServerError`` in the same shape.

No aiohttp middleware: each route handler is wrapped once (``answering``) with what a middleware
did, which saves two coroutine frames per request (issue 15; see ``answering``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

import tcworker
from tcworker.platform import inspector, jsonwire
from tcworker.platform.api import Call, Reply
from tcworker.platform.auth.hawk import HawkRequest, split_bewit
from tcworker.platform.errors import (
    DISK_FULL_MESSAGE,
    AuthenticationFailed,
    InputTooLarge,
    InsufficientStorage,
    InternalServerError,
    MalformedPayload,
    PlatformError,
    ResourceNotFound,
    error_body,
    is_disk_full,
)
from tcworker.platform.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tcworker.platform.metrics import PlatformMetrics
from tcworker.platform.objects import routes as object_routes
from tcworker.platform.services import Services

log = logging.getLogger(__name__)

MAX_BODY = 10 * 1024 * 1024
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_JSON = "application/json"

SERVICES_KEY: web.AppKey[Services] = web.AppKey("services", Services)
METRICS_KEY: web.AppKey[PlatformMetrics] = web.AppKey("metrics", PlatformMetrics)
#: The status /metrics counts for a request whose client went away before it was answered.
CLIENT_GONE = 499
#: What the error body's requestInfo reports (method name, params, payload) for this request,
#: plus the service whose method it is (the metrics label).
INFO_KEY: Any = web.RequestKey("tc_info", dict) if hasattr(web, "RequestKey") else "tc_info"
ROOT_URL_KEY: web.AppKey[list[str]] = web.AppKey("root_url", list)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=jsonwire.dumps(body),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


def _error_response(request: web.Request, err: PlatformError) -> web.Response:
    headers = {"WWW-Authenticate": "hawk"} if isinstance(err, AuthenticationFailed) else None
    info = request.get(INFO_KEY) or {}
    body = error_body(
        err.code,
        err.message,
        method=info.get("method", "unknown"),
        params=info.get("params"),
        payload=info.get("payload"),
    )
    return web.Response(body=body, status=err.status, content_type=_JSON, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answering(metrics: PlatformMetrics, handler: Handler, label: dict[str, str] | None = None) -> Handler:
    """``handler`` with errors in Taskcluster's shape, then latency and count per API method.

    Every route of the app is registered through this wrapper instead of an aiohttp middleware:
    with any middleware, aiohttp runs each request through two more coroutines (the middleware
    and its own ``_fix_request_current_app``), a few per cent of the platform's CPU per call.
    ``label`` (method and service names) is set as the request's info before the handler runs.
    """

    async def answer(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        status = CLIENT_GONE
        if label is not None:
            request[INFO_KEY] = label
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                response = _error_answer(request, exc)
                if response is None:
                    raise
            status = response.status
            return response
        except web.HTTPException as exc:  # < 400: redirects aiohttp raises on purpose
            status = exc.status
            raise
        finally:
            info = request.get(INFO_KEY)
            if info is None:
                metrics.observe("none", "unmatched", status, time.perf_counter() - started)
            else:
                metrics.observe(info["service"], info["method"], status, time.perf_counter() - started)

    return answer


def _error_answer(request: web.Request, exc: Exception) -> web.StreamResponse | None:
    """The answer for what a handler raised, in Taskcluster's error shape; None: let it propagate."""
    if isinstance(exc, PlatformError):
        return _error_response(request, exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return _error_response(request, InputTooLarge(f"request body is larger than {MAX_BODY} bytes"))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = {404: ResourceNotFound, 413: InputTooLarge}.get(exc.status, MalformedPayload)
        return _error_response(request, code(exc.reason or "bad request"))
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return None
    # The one place bugs become a 500 in Taskcluster's error shape.
    if is_disk_full(exc):
        log.warning("refused %s %s: the data disk is full (%s)", request.method, request.path, exc)
        return _error_response(request, InsufficientStorage(DISK_FULL_MESSAGE))
    log.error("internal error answering %s %s", request.method, request.path, exc_info=exc)
    return _error_response(request, InternalServerError(f"internal error: {type(exc).__name__}"))


def _host_port(request: web.Request) -> tuple[str, int]:
    host = request.headers.get("Host", "")
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, 443 if request.headers.get("X-Forwarded-Proto") == "https" else 80


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise InputTooLarge(f"request body is larger than {MAX_BODY} bytes")
    if not request.body_exists:
        return b""
    return await request.read()


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser accepts them; upstream's does not)."""
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """``1e400`` would parse to infinity, which JSON cannot carry back out."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:50]} is out of range")
    return value


# One decoder for every request: json.loads(...) with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _parse_json(body: bytes, content_type: str) -> Any:
    """The request body as JSON: orjson when it is sure to agree (``jsonwire.loads_exact``),
    else the standard parser, which also words every error."""
    if content_type != _JSON:
        raise MalformedPayload("request body must be sent with Content-Type: application/json")
    value = jsonwire.loads_exact(body)
    if value is not jsonwire.UNDECIDED:
        return value
    try:
        # What json.loads does with bytes (UTF-8/16/32 detection), then the shared decoder.
        payload = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
        if _SURROGATE.search(body):
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeError) as exc:
        raise MalformedPayload(f"request body is not valid JSON: {str(exc)[:200]}") from exc
    return payload


class Dispatcher:
    """Routes ``/api/<service>/v1/...`` to declared endpoints through the pipeline above."""

    def __init__(self, services: Services, root_url: list[str]) -> None:
        self.services = services
        self.root_url = root_url
        self.started = time.monotonic()

    def monitoring(self, route: str) -> Any:
        if route == "/ping":
            return {"alive": True, "uptime": round(time.monotonic() - self.started, 3)}
        if route in ("/__heartbeat__", "/__lbheartbeat__"):
            return {}
        if route == "/__version__":
            return {
                "source": "https://github.com/taskcluster/taskcluster",
                "version": tcworker.__version__,
                "commit": "local",
                "build": "tcworker",
            }
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        monitor = self.monitoring(raw_path) if request.method in ("GET", "HEAD") else None
        if monitor is not None and raw_path != "/ping":
            request[INFO_KEY] = {"method": raw_path[1:], "service": "none"}
            return _json(monitor)
        parts = raw_path.split("/", 4)
        if len(parts) < 4 or parts[1] != "api" or parts[3] != "v1" or parts[2] not in self.services.routers:
            raise ResourceNotFound(f"no such API: {request.method} {raw_path[:200]}")
        route = "/" + (parts[4] if len(parts) > 4 else "")
        monitor = self.monitoring(route) if request.method in ("GET", "HEAD") else None
        if monitor is not None:
            request[INFO_KEY] = {"method": route[1:], "service": parts[2]}
            return _json(monitor)
        matched = self.services.routers[parts[2]].match(request.method, route)
        if matched is None:
            raise ResourceNotFound(f"no such API method: {request.method} {raw_path[:200]}")
        endpoint, params = matched
        info: dict[str, Any] = {"method": endpoint.name, "params": params, "service": parts[2]}
        request[INFO_KEY] = info
        body = await _read_body(request)
        identity = self.services.auth.anonymous
        if endpoint.scopes is not None:
            identity = self._authenticate(request, raw_path, raw_query, body)
        payload: Any = None
        if endpoint.input is not None:
            payload = _parse_json(body, request.content_type)
            info["payload"] = payload
            payload = self.services.schemas.validate(endpoint.input, payload)
        call = Call(endpoint, params, None, payload, identity, self.root_url[0], request)
        if endpoint.auto_authorize:
            call.authorize()
        result = await endpoint.handler(call)
        if endpoint.scopes is not None and not call.authorized:
            raise InternalServerError(f"{endpoint.name} answered without authorizing")
        if isinstance(result, Reply):
            if result.body is None:
                return web.Response(status=result.status, headers=result.headers)
            return _json(result.body, result.status, result.headers)
        if result is None:
            return web.Response(status=204)
        return _json(result)

    def _authenticate(self, request: web.Request, raw_path: str, raw_query: str, body: bytes) -> Any:
        header = request.headers.get("Authorization")
        bewit, stripped = split_bewit(raw_query) if "bewit=" in raw_query else (None, raw_query)
        host, port = _host_port(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        hawk_request = HawkRequest(
            method=request.method,
            resource=raw_path + ("?" + stripped if stripped else ""),
            host=host,
            port=port,
            content=body,
            content_type=content_type,
        )
        try:
            return self.services.auth.authenticate(header=header, bewit=bewit, request=hawk_request)
        except PlatformError:
            raise
        except Exception as exc:  # malformed credentials of any kind are an authentication failure
            raise AuthenticationFailed(f"cannot authenticate request: {type(exc).__name__}") from exc


def build_app(services: Services) -> web.Application:
    """The aiohttp app; ``app[ROOT_URL_KEY][0]`` must be set to the bound rootUrl before serving."""
    metrics = PlatformMetrics(services.listings.pending_by_queue)
    app = web.Application(client_max_size=MAX_BODY + 1)
    app[SERVICES_KEY] = services
    app[METRICS_KEY] = metrics
    app[ROOT_URL_KEY] = [""]
    put, get = object_routes.data_handlers(services.objects)
    data = {"service": "object-data"}
    app.router.add_route(
        "PUT", object_routes.DATA_PATH, answering(metrics, put, {**data, "method": "putData"})
    )
    app.router.add_get(
        object_routes.DATA_PATH, answering(metrics, get, {**data, "method": "getData"})
    )  # HEAD too

    async def scrape(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=await metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    app.router.add_get("/metrics", answering(metrics, scrape, {"method": "metrics", "service": "none"}))
    inspector.register(app, services, INFO_KEY, lambda handler: answering(metrics, handler))
    app.router.add_route(
        "*", "/{tail:.*}", answering(metrics, Dispatcher(services, app[ROOT_URL_KEY]).handle)
    )

    async def resolvers(app: web.Application) -> AsyncIterator[None]:
        assert services.resolvers is not None
        async with services.resolvers.running():
            yield

    app.cleanup_ctx.append(resolvers)
    return app
