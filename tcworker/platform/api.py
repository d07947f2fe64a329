"""Endpoint declarations and the request pipeline every API method goes through.

Each service declares its methods once as :class:`Endpoint` values (name, HTTP method, route
with ``<param>`` placeholders, scope template, input schema) like Taskcluster's
``builder.declare``. :class:`Router` matches the *raw* path, percent-decodes parameters, checks
their patterns; :class:`Call` carries one request through authentication, body validation and
authorization (`call.authorize(**extra_params)` renders the scope template, §4.7).
"""

from __future__ import annotations

import functools
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tcworker.platform.auth.service import Identity
from tcworker.platform.errors import (
    InsufficientScopes,
    InternalServerError,
    InvalidRequestArguments,
)
from tcworker.scopes import ScopeExpr, describe, expression_satisfied, missing_scopes

SLUGID = r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$"
IDENT = r"^[a-zA-Z0-9-_]{1,38}$"
WORKER_TYPE = r"[a-z]([-a-z0-9]{0,36}[a-z0-9])?"
PARAM_PATTERNS: dict[str, re.Pattern[str]] = {
    "taskId": re.compile(SLUGID),
    "taskGroupId": re.compile(SLUGID),
    "provisionerId": re.compile(IDENT),
    "workerGroup": re.compile(IDENT),
    "workerId": re.compile(IDENT),
    "workerType": re.compile(f"^{WORKER_TYPE}$"),
    "taskQueueId": re.compile(f"^[a-zA-Z0-9-_]{{1,38}}/{WORKER_TYPE}$"),
    "workerPoolId": re.compile(r"^[a-zA-Z0-9-_]{1,38}/[a-zA-Z0-9-_]{1,38}$"),
    "runId": re.compile(r"^[1-9]*[0-9]+$"),
    "name": re.compile(r"^[\x20-\x7e]+$"),
}
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")
_PLACEHOLDER = re.compile(r"<([^<>]+)>")


class Reply:
    """A non-default answer: status, optional JSON body, extra headers (e.g. 303 + Location)."""

    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One API method. ``greedy`` params may contain literal ``/`` (spec §1.2)."""

    name: str
    method: str
    route: str
    scopes: ScopeExpr | None
    handler: Handler
    input: str | None = None
    greedy: frozenset[str] = frozenset()
    query: tuple[str, ...] = ()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    route_params: tuple[str, ...] = field(init=False, repr=False, compare=False)
    auto_authorize: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: list[str] = []

        def group(match: re.Match[str]) -> str:
            name = match.group(1)
            names.append(name)
            return f"(?P<{name}>.+)" if name in self.greedy else f"(?P<{name}>[^/]+)"

        regex = _PLACEHOLDER.sub(group, re.escape(self.route).replace(r"\<", "<").replace(r"\>", ">"))
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))
        object.__setattr__(self, "route_params", tuple(names))
        needed = _template_params(self.scopes) if self.scopes is not None else set()
        object.__setattr__(self, "auto_authorize", needed <= set(names))


def _template_params(expr: Any) -> set[str]:
    if isinstance(expr, str):
        return set(_PLACEHOLDER.findall(expr))
    if isinstance(expr, list):
        return set().union(*(_template_params(e) for e in expr)) if expr else set()
    if isinstance(expr, dict):
        if "for" in expr:
            return {expr["in"]} | (_template_params(expr["each"]) - {expr["for"]})
        if "if" in expr:
            return {expr["if"]} | _template_params(expr.get("then")) | _template_params(expr.get("else"))
        return set().union(*(_template_params(v) for v in expr.values()))
    return set()


def render(expr: Any, params: Mapping[str, Any]) -> Any:
    """Fill ``<param>`` placeholders; expand ``for/in/each`` and ``if/then/else`` (§4.7).

    Each template string is turned once into a ``str.format_map`` pattern (``_pattern_of``), so a
    placeholder costs a lookup in C instead of a regex substitution calling back into Python; the
    templates are the endpoints' few constant strings, so the cache stays small. Every
    authorized request renders its template, several strings for createTask.
    """
    if isinstance(expr, str):
        return _fill(expr, params)
    if "AllOf" in expr or "AnyOf" in expr:
        key = "AllOf" if "AllOf" in expr else "AnyOf"
        out: list[Any] = []
        for sub in expr[key]:
            value = render(sub, params)
            if isinstance(value, list):
                out.extend(value)
            else:
                out.append(value)
        return {key: out}
    if "for" in expr:
        name, each = expr["for"], expr["each"]
        pattern = _pattern_of(each)
        if pattern is None:
            return [_PLACEHOLDER.sub(_filler(params, name, v), each) for v in params[expr["in"]]]
        scope = dict(params)
        filled = []
        for v in params[expr["in"]]:
            scope[name] = v
            filled.append(pattern.format_map(scope))
        return filled
    if "if" in expr:
        branch = expr.get("then") if params.get(expr["if"]) else expr.get("else")
        return {"AllOf": []} if branch is None else render(branch, params)
    raise ValueError(f"bad scope template {expr!r}")


@functools.lru_cache(maxsize=1024)
def _pattern_of(template: str) -> str | None:
    """``template`` as a ``str.format_map`` pattern, or None when a placeholder name is not a plain
    identifier (``format_map`` would read ``a.b`` or ``a[0]`` as attribute or index access)."""
    parts = _PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    names = parts[1::2]
    if not all(name.isidentifier() for name in names):
        return None
    return "".join(
        "{" + part + "}" if i % 2 else part.replace("{", "{{").replace("}", "}}")
        for i, part in enumerate(parts)
    )


def _fill(template: str, params: Mapping[str, Any]) -> str:
    if "<" not in template:
        return template
    pattern = _pattern_of(template)
    if pattern is None:
        return _PLACEHOLDER.sub(lambda m: str(params[m.group(1)]), template)
    return pattern.format_map(params)


def _filler(params: Mapping[str, Any], name: str, value: Any) -> Callable[[re.Match[str]], str]:
    """Placeholder replacement for one ``for`` element: ``<name>`` is the element, others are params."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(value if key == name else params[key])

    return fill


class Router:
    """Endpoints of one service, matched against the raw (still-encoded) route path."""

    def __init__(self, service: str, endpoints: list[Endpoint]) -> None:
        self.service = service
        self.endpoints = endpoints
        # Candidates per (HTTP method, first path segment), in declaration order, so a request is
        # matched against the few routes that can fit instead of every route of the service.
        # Routes starting with a parameter fit any first segment (key ``None``).
        self._literal_heads = {_head(ep.route) for ep in endpoints} - {None}
        self._candidates: dict[tuple[str, str | None], tuple[Endpoint, ...]] = {}
        for method in {ep.method for ep in endpoints} | {"HEAD"}:
            for head in (*self._literal_heads, None):
                self._candidates[(method, head)] = tuple(
                    ep
                    for ep in endpoints
                    if (ep.method == method or (ep.method == "GET" and method == "HEAD"))
                    and _head(ep.route) in (head, None)
                )

    def match(self, method: str, raw_route: str) -> tuple[Endpoint, dict[str, str]] | None:
        """The endpoint for ``method`` and its decoded params, or None when nothing matches."""
        head = raw_route.split("/", 2)[1] if raw_route.startswith("/") else None
        candidates = self._candidates.get((method, head if head in self._literal_heads else None), ())
        for ep in candidates:
            m = ep.pattern.match(raw_route)
            if m is not None:
                return ep, decode_params(ep, m.groupdict())
        return None


def _head(route: str) -> str | None:
    """The route's first path segment when it is literal text, None when it holds a parameter."""
    first = route.split("/", 2)[1] if route.startswith("/") else route
    return None if "<" in first else first


def decode_params(ep: Endpoint, raw: Mapping[str, str]) -> dict[str, str]:
    """Percent-decode each parameter and check it against its pattern (400 otherwise)."""
    params: dict[str, str] = {}
    for name, value in raw.items():
        decoded = urllib.parse.unquote(value, errors="replace") if "%" in value else value
        pattern = PARAM_PATTERNS.get(name, _PRINTABLE)
        if not pattern.fullmatch(decoded):
            raise InvalidRequestArguments(
                f"Invalid value for parameter `{name}`: {decoded[:200]!r} does not match {pattern.pattern}"
            )
        if name == "runId" and int(decoded) > 1000:
            raise InvalidRequestArguments(f"runId {decoded} is out of range (0..1000)")
        params[name] = decoded
    return params


class Call:
    """One request in flight: route params, query, validated payload, identity, authorization.

    ``query`` is parsed from the request when a handler first asks for it: few methods take
    query arguments, and parsing (yarl's ``rel_url.query``) on every request cost more than
    the router's match.
    """

    __slots__ = ("endpoint", "params", "_query", "payload", "identity", "authorized", "root_url", "request")

    def __init__(
        self,
        endpoint: Endpoint,
        params: dict[str, str],
        query: Mapping[str, str] | None,
        payload: Any,
        identity: Identity,
        root_url: str,
        request: Any,
    ) -> None:
        """``query`` None: read ``request.rel_url.query`` when first needed."""
        self.endpoint = endpoint
        self.params = params
        self._query = query
        self.payload = payload
        self.identity = identity
        self.authorized = False
        self.root_url = root_url
        self.request = request

    @property
    def query(self) -> Mapping[str, str]:
        if self._query is None:
            self._query = self.request.rel_url.query
        return self._query

    def authorize(self, **extra: Any) -> None:
        """Check the endpoint's scope template with route params plus ``extra``; 403 names what is missing."""
        self.authorized = True
        template = self.endpoint.scopes
        if template is None:
            return
        try:
            expr = render(template, {**self.params, **extra})
        except (KeyError, ValueError) as exc:
            raise InternalServerError(f"cannot render scopes of {self.endpoint.name}: {exc}") from exc
        if isinstance(expr, list):
            expr = {"AllOf": expr}
        if not expression_satisfied(self.identity.scopes, expr):
            missing = missing_scopes(self.identity.scopes, expr)
            who = self.identity.client_id or "anonymous (no credentials)"
            raise InsufficientScopes(
                f"Client `{who}` lacks the scopes required for {self.endpoint.name}.\n\n"
                f"Missing scopes:\n{describe(missing if missing is not None else expr)}\n\n"
                f"Required scopes expression:\n{json.dumps(expr)}",
                details={"required": expr, "missing": missing},
            )

    def limit(self) -> int:
        raw = self.query.get("limit")
        if raw is None:
            return 1000
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidRequestArguments("limit must be an integer between 1 and 1000")
        return int(raw)

    def continuation(self) -> str | None:
        return self.query.get("continuationToken") or None
