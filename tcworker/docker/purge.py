"""Purge-cache requests: ask the purge-cache service which caches to drop, and drop them.

docker-worker polled ``purgeCache.purgeRequests(<provisionerId>/<workerType>, since=…)`` and
deleted every cache of the named caches created before each request's ``before`` time. The
engine calls ``poll`` before each task and from a periodic background loop. A failed poll is only
logged: a stale cache is better than a worker that stops claiming because a service is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import taskcluster
import taskcluster.aio

from tcworker.docker.caches import CacheStore

log = logging.getLogger(__name__)


def _parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _format_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class PurgePoller:
    """Polls purge requests for one worker pool and applies them to a ``CacheStore``."""

    # Requests are re-fetched with this much overlap: purging is idempotent, missing one is not.
    OVERLAP_SECONDS = 60.0

    def __init__(self, caches: CacheStore, options: dict[str, Any], worker_pool_id: str) -> None:
        self._caches = caches
        self._options = options
        self._pool = worker_pool_id
        self._since: float | None = None
        self._lock = asyncio.Lock()

    async def poll(self) -> int:
        """Fetch requests since the last poll and apply them; returns instances purged."""
        async with self._lock:
            started = dt.datetime.now(dt.UTC).timestamp()
            query = {} if self._since is None else {"since": _format_time(self._since - self.OVERLAP_SECONDS)}
            client = taskcluster.aio.PurgeCache(self._options)
            try:
                answer = await client.purgeRequests(self._pool, query=query)
            except (taskcluster.exceptions.TaskclusterFailure, OSError) as e:
                log.warning("purge-cache poll for %s failed: %s", self._pool, e)
                return 0
            purged = 0
            for request in answer.get("requests", []):
                try:
                    before = _parse_time(str(request["before"]))
                    name = str(request["cacheName"])
                except (KeyError, ValueError) as e:
                    log.warning("ignoring malformed purge request %r: %s", request, e)
                    continue
                purged += await self._caches.purge(name, before)
            self._since = started
            return purged

    async def run_forever(self, interval: float) -> None:
        """Poll every ``interval`` seconds until cancelled (owned by the engine)."""
        while True:
            await asyncio.sleep(interval)
            await self.poll()
