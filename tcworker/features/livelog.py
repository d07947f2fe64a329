"""liveLog / localLiveLog: the task log is readable over HTTP while the task runs (spec §5.1).

Per worker process, ``initialise`` starts one ``LiveLogServer`` on the worker's event loop
(``livelogExposePort``, or when that is 0 the GET port generic-worker's slot 0 would use,
``livelogPortBase + 1``, else a random port; on ``publicIP`` or 127.0.0.1). Per run, ``start``
registers the task log with it and creates ``logs.live`` (``public/logs/live.log``) — while the
command starts, not before it — as a ``reference`` artifact to
``http://<publicIP>:<port>/log/<token>``, expiring after the max run time plus 15 minutes;
``stop`` replaces it with a ``link`` to the backing log, as generic-worker does — concurrently
with the backing log's upload (``run.before_report``: the report waits for it). ``stop`` does not
wait for the reference's answer either (the link does): a command shorter than that call no
longer holds the backing log's upload back (~0.3–0.5 ms of a trivial task's cycle, measured); a
reference that fails after the task log was closed is reported in the worker's log only. The stream itself
goes on until the task log is closed, so the lines written after the features stopped reach live
readers too.

Requested by ``features.liveLog`` (generic-worker payloads) or ``features.localLiveLog``
(docker-worker payloads), both default true; ``enableLiveLog: false`` switches it off for the pool
(no live log at all, not a malformed payload). Best effort throughout: a server that cannot start
or an artifact that cannot be created is a warning, never a failed task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from tcworker import tctime
from tcworker.config import WorkerConfig
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.livelog.server import CONTENT_TYPE, FollowableLog, LiveLogServer
from tcworker.tcapi.clients import Clients

log = logging.getLogger(__name__)

REFERENCE_GRACE = 15 * 60  # seconds after the max run time the reference artifact expires


class LiveLogFeature(Feature):
    name = "liveLog"

    def __init__(self) -> None:
        self.server: LiveLogServer | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if not config.enableLiveLog:
            return
        server = LiveLogServer()
        expose, base = int(config.livelogExposePort), int(config.livelogPortBase)
        try:
            await server.start(config.publicIP, expose, fallback_port=base + 1 if base > 0 else None)
        except (OSError, ValueError) as e:
            log.warning("live log server cannot start (%s): tasks run without live logs", e)
            return
        self.server = server
        log.info("live logs served at %s", server.url("<token>"))

    async def shutdown(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not run.config.enableLiveLog or not run.model.live_log_enabled:
            return None
        return LiveLogTaskFeature(run, self.server)


class LiveLogTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle, server: LiveLogServer | None) -> None:
        self.run = run
        self.server = server
        self.name = run.model.live_log_name
        self.url: str | None = None
        self._reference: asyncio.Task[None] | None = None

    def reserved_artifacts(self) -> Sequence[str]:
        return (self.name,)

    async def start(self) -> None:
        run = self.run
        if self.server is None or not self.server.running:
            run.log.warn("The live log is not available on this worker; the log is published at the end")
            return
        try:
            task_log: FollowableLog = run.log  # type: ignore[assignment]  # the TaskLog itself
            self.url = self.server.url(self.server.register(task_log))
            expires = min(
                tctime.from_now(run.model.max_run_time + REFERENCE_GRACE), tctime.parse(run.task["expires"])
            )
        except Exception as e:  # best effort (spec §5.1)
            self._unavailable(e)
            return
        # The command need not wait for the queue: the reference is created while it starts.
        self._reference = asyncio.create_task(self._create_reference(self.url, tctime.to_json(expires)))

    async def _create_reference(self, url: str, expires: str) -> None:
        try:
            await self.run.publisher.create_reference(self.name, url, CONTENT_TYPE, expires)
        except Exception as e:  # best effort (spec §5.1)
            self._unavailable(e)

    def _unavailable(self, error: BaseException) -> None:
        run = self.run
        log.warning("live log of %s/%s unavailable: %s", run.task_id, run.run_id, error)
        run.log.warn(f"The live log is not available for this task ({error}); the log is published at the end")

    async def stop(self, outcome: RunOutcome) -> None:
        run = self.run
        reference, self._reference = self._reference, None
        if not run.model.backing_log_enabled or self.name == run.model.backing_log_name:
            if reference is not None:  # created before the report all the same
                run.before_report(_finished(reference), f"creating {self.name}")
            return
        # Nothing waits for the reference's answer or the link but the report: the backing log's
        # upload starts at once, and the link is created while it goes on.
        run.before_report(self._link(reference), f"linking {self.name}")

    async def _link(self, reference: asyncio.Task[None] | None) -> None:
        run = self.run
        if reference is not None:
            await reference  # the link must replace the reference, not race it
        try:
            await run.publisher.create_link(
                self.name, run.model.backing_log_name, CONTENT_TYPE, str(run.task["expires"])
            )
        except Exception as e:  # best effort: the backing log is still published
            log.warning("cannot turn %s of %s/%s into a link: %s", self.name, run.task_id, run.run_id, e)
            run.log.warn(f"Could not link {self.name} to {run.model.backing_log_name}: {e}")


async def _finished(task: asyncio.Task[None]) -> None:
    await task
