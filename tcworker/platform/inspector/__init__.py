"""The task inspector: HTML pages of the platform's tasks, served by ``tcworker queue serve``.

``/`` lists tasks newest first, ``/groups/<taskGroupId>`` one task group, ``/tasks/<taskId>`` one
task (definition, runs, live log, artifacts, cancel / rerun buttons). Pages read the store in
process through :class:`~tcworker.platform.inspector.views.InspectorViews`; the buttons call the
platform's public API from the browser, Hawk-signed there with the user's credentials, so the
inspector adds no way to act on tasks that the API does not already check.
"""

from __future__ import annotations

from aiohttp import web

from tcworker.platform.inspector.routes import InspectorPages
from tcworker.platform.inspector.views import InspectorViews
from tcworker.platform.services import Services


def register(app: web.Application, services: Services) -> None:
    """Add the inspector's routes; call before the API catch-all route is added."""
    pages = InspectorPages(InspectorViews(services.db))
    app.router.add_get("/", pages.tasks)
    app.router.add_get("/find", pages.find)
    app.router.add_get("/groups/{taskGroupId}", pages.group)
    app.router.add_get("/tasks/{taskId}", pages.task)
    app.router.add_get("/inspector/static/{name}", pages.static_file)
