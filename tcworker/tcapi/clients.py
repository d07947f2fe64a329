"""Official ``taskcluster.aio`` clients for the worker, sharing one aiohttp session (design G6, G14).

The worker only ever talks to the platform through these: its own credentials for claimWork and
scope expansion, a run's temporary credentials for everything about that run. One pooled
session keeps connection set-up out of a trivial task's critical path.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import TaskclusterConnectionError, TaskclusterRestFailure


def is_transient(error: BaseException) -> bool:
    """5xx, throttling and connection failures are worth retrying; other 4xx are final."""
    if isinstance(error, TaskclusterRestFailure):
        return error.status_code >= 500 or error.status_code in (408, 429)
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status >= 500 or error.status in (408, 429)
    return isinstance(error, TaskclusterConnectionError | aiohttp.ClientError | TimeoutError | OSError)


def status_code(error: BaseException) -> int | None:
    if isinstance(error, TaskclusterRestFailure):
        return int(error.status_code)
    if isinstance(error, aiohttp.ClientResponseError):
        return int(error.status)
    return None


class Clients:
    """Client factory bound to one root URL and one pooled HTTP session."""

    def __init__(self, root_url: str, worker_credentials: dict[str, str]) -> None:
        self.root_url = root_url.rstrip("/")
        self._worker_credentials = dict(worker_credentials)
        self._session: aiohttp.ClientSession | None = None

    def _options(self, credentials: dict[str, str] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"rootUrl": self.root_url}
        if credentials:
            options["credentials"] = {k: v for k, v in credentials.items() if v}
        return options

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def queue(self, credentials: dict[str, str] | None = None) -> Any:
        """A queue client; ``None`` credentials = the worker's own."""
        creds = self._worker_credentials if credentials is None else credentials
        return taskcluster.aio.Queue(self._options(creds), session=self.session)

    def auth(self) -> Any:
        return taskcluster.aio.Auth(self._options(self._worker_credentials), session=self.session)

    def object_service(self, credentials: dict[str, str]) -> Any:
        return taskcluster.aio.Object(self._options(credentials), session=self.session)

    async def expand_scopes(self, scopes: list[str]) -> list[str]:
        """``auth.expandScopes`` with the worker's credentials (``assume:`` roles resolved)."""
        result = await self.auth().expandScopes({"scopes": list(scopes)})
        expanded: list[str] = result.get("scopes", [])
        return expanded

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
