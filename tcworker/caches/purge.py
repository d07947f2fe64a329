"""Purge-cache requests: ask the purge-cache service which caches to drop, and drop them.

docker-worker polled ``purgeCache.purgeRequests(<provisionerId>/<workerType>, since=…)`` and
deleted every cache of the named caches created before each request's ``before`` time. The
caches feature calls ``poll`` before each task and from a periodic background loop. A failed poll is only
logged: a stale cache is better than a worker that stops claiming because a service is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import taskcluster

from tcworker import tctime
from tcworker.caches.store import CacheStore

log = logging.getLogger(__name__)


class PurgePoller:
    """Polls purge requests for one worker pool and applies them to a ``CacheStore``."""

    # Requests are re-fetched with this much overlap: purging is idempotent, missing one is not.
    OVERLAP_SECONDS = 60.0

    def __init__(self, caches: CacheStore, client: Callable[[], Any], worker_pool_id: str) -> None:
        self._caches = caches
        self._client = client  # makes a purge-cache client (tcworker.tcapi.clients.Clients.purge_cache)
        self._pool = worker_pool_id
        self._since: dt.datetime | None = None
        self._lock = asyncio.Lock()

    async def poll(self) -> int:
        """Fetch requests since the last poll and apply them; returns instances purged."""
        async with self._lock:
            started = tctime.now()
            query: dict[str, str] = {}
            if self._since is not None:
                query["since"] = tctime.to_json(self._since - dt.timedelta(seconds=self.OVERLAP_SECONDS))
            client = self._client()
            try:
                answer = await client.purgeRequests(self._pool, query=query)
            except (taskcluster.exceptions.TaskclusterFailure, OSError) as e:
                log.warning("purge-cache poll for %s failed: %s", self._pool, e)
                return 0
            purged = 0
            for request in answer.get("requests", []):
                try:
                    before = tctime.parse(str(request["before"])).timestamp()
                    name = str(request["cacheName"])
                except (KeyError, ValueError) as e:
                    log.warning("ignoring malformed purge request %r: %s", request, e)
                    continue
                purged += await self._caches.purge(name, before)
            self._since = started
            return purged

    async def run_forever(self, interval: float) -> None:
        """Poll every ``interval`` seconds until cancelled (owned by the caches feature)."""
        while True:
            await asyncio.sleep(interval)
            await self.poll()
