"""RunClaim: the claim on one run — its current task credentials, the reclaim loop, loss of the claim.

Every queue call about a run uses the run's *latest* temporary credentials (spec/worker.md §1.6),
so the queue client is rebuilt after each reclaim and every ``on_reclaimed`` listener (e.g. the
taskcluster-proxy) gets the new credentials. Reclaim schedule: generic-worker's
``takenUntil − 3 min``; when that is less than 30 s away (short claim timeouts, as in local test
platforms) generic-worker schedules no reclaim at all and the claim silently expires — we reclaim
at half the remaining time instead (docker-worker's rule). ``reclaim_interval`` > 0 forces a
fixed interval (generic-worker's test hook). A reclaim that fails after the client's own retries
(409: cancelled, resolved elsewhere, deadline) stops reclaiming, records why (``queue.status``) and
calls ``on_lost`` once. Between reclaims, ``status_interval`` > 0 polls ``queue.status`` with the
run's current credentials (one cheap GET per interval per running run): a run the queue no longer
shows ``running`` (cancelled, resolved elsewhere) is lost at once, so a cancel reaches the task in
seconds instead of at the next reclaim (generic-worker only learns it then: taskcluster#6205). A
failed poll is only logged; the reclaim stays the authority on the claim. The same class keeps the
claims superseding holds on other tasks (without polling).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tcworker import tctime
from tcworker.tcapi.clients import Clients, Credentials

log = logging.getLogger(__name__)

GW_RECLAIM_MARGIN = 180.0
GW_MIN_DELAY = 30.0


class RunClaim:
    """Claim state of one run; ``queue`` always carries the newest credentials."""

    def __init__(
        self,
        clients: Clients,
        task_id: str,
        run_id: int,
        credentials: Credentials,
        taken_until: str,
        reclaim_interval: float = 0.0,
        on_lost: Callable[[str], None] | None = None,
        status_interval: float = 0.0,
    ) -> None:
        self.clients = clients
        self.task_id = task_id
        self.run_id = run_id
        self.credentials = dict(credentials)
        self.taken_until = tctime.parse(taken_until)
        self.reclaim_interval = reclaim_interval
        self.status_interval = status_interval
        self.on_lost = on_lost
        self._on_reclaimed: list[Callable[[Credentials], None]] = []
        self.lost_reason: str | None = None
        self.reclaims = 0
        self._queue = clients.queue(self.credentials)
        self._task: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self.status_polls = 0
        self.status_poll_failures = 0
        self.reclaim_failures = 0

    @classmethod
    def from_claim(cls, clients: Clients, claim: dict[str, Any], **kwargs: Any) -> RunClaim:
        """From a claimWork / claimTask answer entry."""
        return cls(
            clients,
            str(claim["status"]["taskId"]),
            int(claim["runId"]),
            claim["credentials"],
            claim["takenUntil"],
            **kwargs,
        )

    @property
    def queue(self) -> Any:
        return self._queue

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def on_reclaimed(self, listener: Callable[[Credentials], None]) -> None:
        """Call ``listener(new_credentials)`` after every successful reclaim."""
        self._on_reclaimed.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._reclaim_loop(), name=f"reclaim {self.task_id}/{self.run_id}"
            )
        if self._status_task is None and self.status_interval > 0:
            self._status_task = asyncio.create_task(
                self._status_loop(), name=f"status poll {self.task_id}/{self.run_id}"
            )

    async def stop(self) -> None:
        """Stop reclaiming and polling (before a report, and when the run is over)."""
        tasks = [self._task, self._status_task]
        self._task = self._status_task = None
        for task in tasks:
            if task is not None and not task.done() and task is not asyncio.current_task():
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
            if not await self.reclaim_once():
                return

    async def _status_loop(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.status_interval)
            state = await self.poll_status()
            if state is not None and state != "running":
                break
        self._cancel_other(self._task)

    async def poll_status(self) -> str | None:
        """One ``queue.status``; loses the claim when our run is no longer ``running``.

        Returns the run's state, or ``None`` when the queue could not be asked."""
        try:
            status = await self._queue.status(self.task_id)
        except Exception as e:
            self.status_poll_failures += 1
            log.debug("status poll of %s failed: %s", self.task_id, e)
            return None
        self.status_polls += 1
        runs = status.get("status", {}).get("runs", [])
        if self.run_id >= len(runs):
            return None
        run = runs[self.run_id]
        state = str(run.get("state", ""))
        if state != "running" and not self.lost:
            reason = run.get("reasonResolved") or state or "unknown"
            self._record_loss(f"status poll: run is {state}", str(reason))
        return state

    def _cancel_other(self, task: asyncio.Task[None] | None) -> None:
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()

    async def reclaim_once(self) -> bool:
        """One reclaim (the client retries transient failures); ``False`` once the claim is lost."""
        started = time.monotonic()
        try:
            result = await self._queue.reclaimTask(self.task_id, str(self.run_id))
        except Exception as e:
            self.reclaim_failures += 1
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
        for listener in self._on_reclaimed:
            try:
                listener(dict(self.credentials))
            except Exception:
                log.exception("reclaim listener of %s/%s failed", self.task_id, self.run_id)
        return True

    async def _lose(self, error: BaseException) -> None:
        if self.lost:
            return
        reason = "unknown"
        try:
            status = await self.clients.queue(None).status(self.task_id)
            runs = status["status"].get("runs", [])
            if self.run_id < len(runs):
                run = runs[self.run_id]
                reason = run.get("reasonResolved") or run.get("state") or reason
        except Exception as e:  # the status query is best effort
            log.warning("cannot query status of %s after failed reclaim: %s", self.task_id, e)
        self._cancel_other(self._status_task)
        self._record_loss(f"reclaim failed ({error})", reason)

    def _record_loss(self, how: str, reason: str) -> None:
        """First loss wins: record it, then tell ``on_lost`` once."""
        if self.lost:
            return
        self.lost_reason = reason
        log.warning(
            "%s/%s: %s; the queue resolved the run (%s): aborting it", self.task_id, self.run_id, how, reason
        )
        if self.on_lost is not None:
            self.on_lost(reason)
