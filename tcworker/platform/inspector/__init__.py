"""The task inspector: HTML pages of the platform's tasks, served by ``tcworker queue serve``.

``/`` lists tasks newest first, ``/groups/<taskGroupId>`` one task group, ``/tasks/<taskId>`` one
task (definition, runs, live log, artifacts, cancel / rerun buttons). Pages read the store in
process through :class:`~tcworker.platform.inspector.views.InspectorViews`; the buttons call the
platform's public API from the browser, Hawk-signed there with the user's credentials, so the
inspector adds no way to act on tasks that the API does not already check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tcworker.platform.inspector.routes import InspectorPages
from tcworker.platform.inspector.views import InspectorViews
from tcworker.platform.services import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _labelled(handler: Handler, page: str, info_key: Any) -> Handler:
    """Report the page to the platform's request bookkeeping (/metrics: service ``inspector``)."""

    async def labelled(request: web.Request) -> web.StreamResponse:
        request[info_key] = {"method": page, "service": "inspector"}
        return await handler(request)

    return labelled


def register(
    app: web.Application, services: Services, info_key: Any, wrap: Callable[[Handler], Handler]
) -> None:
    """Add the inspector's routes; call before the API catch-all route is added.

    ``info_key`` is the app's request key for the method name its request bookkeeping reports;
    ``wrap`` gives each page that bookkeeping (error shape, metrics) as it gives every route."""
    pages = InspectorPages(InspectorViews(services.db))
    for path, handler, page in (
        ("/", pages.tasks, "tasks"),
        ("/find", pages.find, "find"),
        ("/groups/{taskGroupId}", pages.group, "group"),
        ("/tasks/{taskId}", pages.task, "task"),
        ("/inspector/static/{name}", pages.static_file, "static"),
    ):
        app.router.add_get(path, wrap(_labelled(handler, page, info_key)))
