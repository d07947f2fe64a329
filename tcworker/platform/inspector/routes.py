"""The inspector's HTTP handlers: list, group and task pages, the search redirect, static files.

Pages are server-rendered from :class:`InspectorViews` (the platform's store, in process) and
carry a strict Content-Security-Policy: scripts and styles only from this origin (no inline
script, so an escaping slip could not run anyway), fetches to this origin and to http(s) live-log
servers of workers. Static files are read once at start-up and served with a content-hash
version in their URL, so browsers cache them for a day and never use a stale one.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

from aiohttp import web

from tcworker.platform.api import SLUGID
from tcworker.platform.inspector import render
from tcworker.platform.inspector.logsource import live_log_name, log_source
from tcworker.platform.inspector.views import InspectorViews

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self' http: https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SLUGID_RE = re.compile(SLUGID)
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    version: str


def load_static() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in (importlib.resources.files(__package__) / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in _STATIC_TYPES:
            body = entry.read_bytes()
            files[entry.name] = StaticFile(body, _STATIC_TYPES[suffix], hashlib.sha256(body).hexdigest()[:12])
    return files


def _cursor(request: web.Request, name: str = "before") -> int | None:
    raw = request.query.get(name, "")
    return int(raw) if raw.isdigit() and len(raw) < 20 else None


def _page(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS)


class InspectorPages:
    """One handler per page, bound to the store views and the static files."""

    def __init__(self, views: InspectorViews) -> None:
        self.views = views
        self.static = load_static()
        self.versions = {name: f.version for name, f in self.static.items()}

    def not_found(self, what: str) -> web.Response:
        return _page(render.not_found_page(what, self.versions), 404)

    async def tasks(self, request: web.Request) -> web.Response:
        before = _cursor(request)
        tasks, groups = await self.views.front(before)
        return _page(render.tasks_page(tasks, groups, before, self.versions))

    async def group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["taskGroupId"]
        before = _cursor(request)
        group = await self.views.group(group_id, before)
        if group is None:
            return self.not_found(f"task group {group_id} not found")
        return _page(render.group_page(group, before, self.versions))

    async def task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["taskId"]
        task, run_id, artifacts = await self.views.task(task_id, _cursor(request, "run"))
        if task is None:
            return self.not_found(f"task {task_id} not found")
        log = None
        if run_id is not None:
            log = log_source(task_id, run_id, live_log_name(task.definition), {a.name: a for a in artifacts})
        return _page(render.task_page(task, run_id, artifacts, log, self.versions))

    async def find(self, request: web.Request) -> web.Response:
        wanted = request.query.get("id", "").strip()
        kind = await self.views.kind_of(wanted) if SLUGID_RE.match(wanted) else None
        if kind == "task":
            raise web.HTTPSeeOther(render.task_href(wanted))
        if kind == "group":
            raise web.HTTPSeeOther(render.group_href(wanted))
        return self.not_found(f"no task or task group with id {wanted!r}")

    async def static_file(self, request: web.Request) -> web.Response:
        found = self.static.get(request.match_info["name"])
        if found is None:
            return self.not_found("no such file")
        return web.Response(
            body=found.body,
            content_type=found.content_type,
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )
