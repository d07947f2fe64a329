"""RunStatus: one run's claim — current task credentials, the reclaim loop, loss of the claim.

Every queue call about a run uses the run's *latest* temporary credentials (spec/worker.md §1.6),
so the queue client is rebuilt after each reclaim. Reclaim schedule: generic-worker's
``takenUntil − 3 min``; when that is less than 30 s away (short claim timeouts, as in local
test platforms) generic-worker schedules no reclaim at all and the claim silently expires — we
reclaim at half the remaining time instead (docker-worker's rule) and say so in the worker log.
``reclaimIntervalSecs`` > 0 forces a fixed interval (generic-worker's test hook).
A failed reclaim (409: cancelled, resolved elsewhere, deadline) stops reclaiming, records why
(``queue.status``) and calls ``on_lost`` once, which aborts the run (no report will be made).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tcworker import tctime
from tcworker.tcapi.clients import Clients, is_transient

log = logging.getLogger(__name__)

GW_RECLAIM_MARGIN = 180.0
GW_MIN_DELAY = 30.0
RECLAIM_ATTEMPTS = 3


class RunStatus:
    """Claim state of one run; ``queue`` always carries the newest credentials."""

    def __init__(
        self,
        clients: Clients,
        task_id: str,
        run_id: int,
        credentials: dict[str, str],
        taken_until: str,
        reclaim_interval: float = 0.0,
        on_lost: Callable[[str], None] | None = None,
        on_reclaimed: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.clients = clients
        self.task_id = task_id
        self.run_id = run_id
        self.credentials = dict(credentials)
        self.taken_until = tctime.parse(taken_until)
        self.reclaim_interval = reclaim_interval
        self.on_lost = on_lost
        self.on_reclaimed = on_reclaimed
        self.lost_reason: str | None = None
        self.reclaims = 0
        self._queue = clients.queue(self.credentials)
        self._task: asyncio.Task[None] | None = None

    @property
    def queue(self) -> Any:
        return self._queue

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._reclaim_loop(), name=f"reclaim {self.task_id}/{self.run_id}"
            )

    async def stop(self) -> None:
        """Stop reclaiming (before a report, and when the run is over)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def next_delay(self) -> float:
        if self.reclaim_interval > 0:
            return self.reclaim_interval
        remaining = (self.taken_until - tctime.now()).total_seconds()
        delay = remaining - GW_RECLAIM_MARGIN
        if delay >= GW_MIN_DELAY:
            return delay
        log.log(
            logging.DEBUG if self.reclaims else logging.INFO,
            "claim of %s/%s ends in %.0fs: too soon for generic-worker's schedule; reclaiming at half-time",
            self.task_id,
            self.run_id,
            remaining,
        )
        return max(1.0, remaining / 2)

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.next_delay())
            if not await self._reclaim_once():
                return

    async def _reclaim_once(self) -> bool:
        delay = 1.0
        for attempt in range(RECLAIM_ATTEMPTS):
            started = time.monotonic()
            try:
                result = await self._queue.reclaimTask(self.task_id, str(self.run_id))
            except Exception as e:
                if is_transient(e) and attempt < RECLAIM_ATTEMPTS - 1:
                    remaining = (self.taken_until - tctime.now()).total_seconds()
                    if remaining > delay + 1:
                        log.warning("reclaim of %s/%s failed (%s); retrying", self.task_id, self.run_id, e)
                        await asyncio.sleep(delay)
                        delay *= 2
                        continue
                await self._lose(e)
                return False
            self.credentials = dict(result["credentials"])
            self.taken_until = tctime.parse(result["takenUntil"])
            self._queue = self.clients.queue(self.credentials)
            self.reclaims += 1
            log.debug(
                "reclaimed %s/%s in %.3fs; takenUntil %s",
                self.task_id,
                self.run_id,
                time.monotonic() - started,
                result["takenUntil"],
            )
            if self.on_reclaimed is not None:
                self.on_reclaimed(self.credentials)
            return True
        return False

    async def _lose(self, error: BaseException) -> None:
        reason = "unknown"
        try:
            status = await self.clients.queue(None).status(self.task_id)
            runs = status["status"].get("runs", [])
            if self.run_id < len(runs):
                run = runs[self.run_id]
                reason = run.get("reasonResolved") or run.get("state") or reason
        except Exception as e:  # the status query is best effort
            log.warning("cannot query status of %s after failed reclaim: %s", self.task_id, e)
        self.lost_reason = reason
        log.warning(
            "reclaim of %s/%s failed (%s); the queue resolved the run (%s): aborting it",
            self.task_id,
            self.run_id,
            error,
            reason,
        )
        if self.on_lost is not None:
            self.on_lost(reason)
