"""Every Taskcluster client the worker uses is made here, with one retry policy and one error translator.

The worker talks to the platform only through the official ``taskcluster.aio`` clients (design G6),
sharing one pooled aiohttp session so connection set-up stays out of a trivial task's critical path.
Retries are the official client's own (exponential backoff with jitter on 5xx and connection
errors); nothing in tcworker wraps another retry loop around a client call, so one failing report
costs ``RETRIES + 1`` HTTP attempts, not a product of nested loops. ``RETRIES`` = 9 rides out about
50 s of outage (0.1 s · 2⁰…2⁸, ±25 %), enough for a platform or proxy restart. ``translate`` is the one
place that turns a client exception into a ``tcworker.errors`` task error.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import taskcluster.aio
from taskcluster.exceptions import TaskclusterConnectionError, TaskclusterRestFailure

from tcworker import mohawkquiet
from tcworker.errors import MalformedPayload, ResourceUnavailable, TaskError
from tcworker.tcapi import hawksender, leanrequest

mohawkquiet.install()  # every client below signs with mohawk: no eager debug pretty-printing
hawksender.install()  # … through a lean Sender that makes the same header with less work
leanrequest.install()  # … and requests whose debug strings are built only when logged

RETRIES = 9
Credentials = dict[str, str]


def is_transient(error: BaseException) -> bool:
    """5xx, throttling and connection failures are worth retrying later; other 4xx are final."""
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


def translate(error: BaseException, what: str) -> TaskError:
    """A client error (after the client's retries) as the task error it means for the run.

    A 4xx other than throttling is the task's fault (``MalformedPayload``: a conflicting artifact,
    a scope the task lacks); what is left of a 5xx or an outage is ``ResourceUnavailable``.
    """
    if isinstance(error, TaskError):
        return error
    code = status_code(error)
    if code == 409:
        return MalformedPayload(f"{what}: the queue refused it as conflicting (409): {error}")
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return MalformedPayload(f"{what}: rejected ({code}): {error}")
    return ResourceUnavailable(f"{what}: {error}")


class Clients:
    """Client factory bound to one root URL, the worker's credentials and one pooled HTTP session."""

    def __init__(self, root_url: str, worker_credentials: Credentials) -> None:
        self.root_url = root_url.rstrip("/")
        self._worker_credentials = dict(worker_credentials)
        self._session: aiohttp.ClientSession | None = None

    def options(self, credentials: Credentials | None = None, retries: int = RETRIES) -> dict[str, Any]:
        """Client options; ``None`` credentials = the worker's own. The dict is a fresh copy
        (the official client turns the credential strings it is given into bytes)."""
        creds = self._worker_credentials if credentials is None else credentials
        options: dict[str, Any] = {"rootUrl": self.root_url, "maxRetries": retries}
        if creds:
            options["credentials"] = {k: v for k, v in creds.items() if v}
        return options

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def queue(self, credentials: Credentials | None = None) -> Any:
        """A queue client; ``None`` credentials = the worker's own."""
        return taskcluster.aio.Queue(self.options(credentials), session=self.session)

    def auth(self) -> Any:
        return taskcluster.aio.Auth(self.options(), session=self.session)

    def object_service(self, credentials: Credentials | None = None) -> Any:
        return taskcluster.aio.Object(self.options(credentials), session=self.session)

    def index(self, credentials: Credentials | None = None) -> Any:
        return taskcluster.aio.Index(self.options(credentials), session=self.session)

    def purge_cache(self, retries: int = RETRIES) -> Any:
        """purge-cache with the worker's credentials (best-effort pollers pass fewer retries)."""
        return taskcluster.aio.PurgeCache(self.options(None, retries), session=self.session)

    async def expand_scopes(self, scopes: list[str]) -> list[str]:
        """``auth.expandScopes`` with the worker's credentials (``assume:`` roles resolved)."""
        result = await self.auth().expandScopes({"scopes": list(scopes)})
        expanded: list[str] = result.get("scopes", [])
        return expanded

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
