"""Purge-cache requests: ask the purge-cache service which caches to drop, and drop them.

Both workers poll ``purgeCache.purgeRequests(<provisionerId>/<workerType>, since=…)`` and
delete every instance of the named cache created before each request's ``before`` time
(spec/worker.md §2.5 "Purging"; docker-worker did the same). The one ``CacheStore`` serves both
payload kinds, so one poller per worker process applies each request to both. Polls happen
before a task mounts writable caches, and from a periodic background loop. A failed poll is only
logged: a stale cache is better than a worker that stops claiming because a service is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import taskcluster
import taskcluster.aio

from tcworker import tctime
from tcworker.mounts.caches import CacheStore

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 300.0


class PurgePoller:
    """Polls purge requests for one worker pool and applies them to a ``CacheStore``."""

    # Requests are re-fetched with this much overlap: purging is idempotent, missing one is not.
    OVERLAP_SECONDS = 300.0

    def __init__(self, caches: CacheStore, options: dict[str, Any], worker_pool_id: str) -> None:
        self._caches = caches
        self._options = options
        self._pool = worker_pool_id
        self._since: dt.datetime | None = None
        self._lock = asyncio.Lock()
        self._loop_task: asyncio.Task[None] | None = None

    async def poll(self) -> int:
        """Fetch requests since the last poll and apply them; returns instances purged."""
        async with self._lock:
            started = tctime.now()
            query: dict[str, str] = {}
            if self._since is not None:
                query["since"] = tctime.to_json(self._since - dt.timedelta(seconds=self.OVERLAP_SECONDS))
            client = taskcluster.aio.PurgeCache(self._options)
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

    async def run_forever(self, interval: float = POLL_INTERVAL_SECONDS) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.poll()

    def start_background(self, interval: float = POLL_INTERVAL_SECONDS) -> None:
        """Start the periodic loop once per process (idempotent)."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self.run_forever(interval))

    async def stop_background(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
