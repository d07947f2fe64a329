"""Purge-cache API methods: purgeCache and purgeRequests."""

from __future__ import annotations

from typing import Any

from tcworker import tctime
from tcworker.platform.api import Call, Endpoint
from tcworker.platform.clock import to_ms
from tcworker.platform.errors import InvalidRequestArguments
from tcworker.platform.purgecache.service import PurgeCacheService


def endpoints(purge: PurgeCacheService) -> list[Endpoint]:
    async def purge_cache(call: Call) -> Any:
        call.authorize(cacheName=call.payload["cacheName"])
        await purge.purge(call.params["workerPoolId"], call.payload["cacheName"])
        return {}

    async def purge_requests(call: Call) -> Any:
        since = call.query.get("since")
        since_ms = 0
        if since:
            try:
                since_ms = to_ms(tctime.parse(since))
            except (ValueError, OverflowError) as exc:
                raise InvalidRequestArguments("`since` must be an RFC 3339 date-time") from exc
        return await purge.requests(call.params["workerPoolId"], since_ms)

    pool = frozenset({"workerPoolId"})
    return [
        Endpoint(
            "purgeCache",
            "POST",
            "/purge-cache/<workerPoolId>",
            "purge-cache:<workerPoolId>:<cacheName>",
            purge_cache,
            input="purge-cache/purge-cache-request.json",
            greedy=pool,
        ),
        Endpoint(
            "purgeRequests",
            "GET",
            "/purge-cache/<workerPoolId>",
            "purge-cache:purge-requests::<workerPoolId>",
            purge_requests,
            greedy=pool,
            query=("since",),
        ),
    ]
