"""``features.interactive``: a shell in the running task over a websocket (both payload kinds).

Per worker process, ``initialise`` starts one ``ShellServer`` on ``interactivePort`` (on
``publicIP``, else 127.0.0.1). Per run, ``start`` registers the task's directory, environment
(``run.command_env()``) and user (``Sandbox.shell_identity``) under a fresh secret and creates
the private reference artifact ``private/generic-worker/shell.html`` (expires after the max run
time plus 15 minutes, as generic-worker) pointing at Taskcluster's shell page with the
websocket URL in ``socketUrl``. ``stop`` (the task ended) closes every session and kills its
processes, as generic-worker ends sessions with the task. Best effort, as upstream: a server that
cannot start or an engine without host shells is a warning, never a failed task. The secret is
added to the log's secrets and is only ever in the private artifact.

On container engines (``shell_identity`` is ``Unsupported``) the shell is a ``docker exec`` into
the task's running container (``Sandbox.open_shell``). docker-worker payloads publish
``private/docker-worker/shell.html`` instead and keep docker-worker's keep-alive: the container
stays up after the command (``Sandbox.keep_container_after_command``) at least
``interactiveMinTime`` s from the start, while a session is connected and
``interactiveExpirationAfterSession`` s after the last one closed, never past the reference's
expiry (max run time + 15 min from the start) and not once the run is cancelled; the resolution
stays the command's (``stop`` only waits, then ``Sandbox.release_container``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from urllib.parse import urlencode

from tcworker import tctime
from tcworker.config import WorkerConfig
from tcworker.engines.base import Unsupported
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.interactive.server import ShellServer, ShellTarget
from tcworker.tcapi.clients import Clients

log = logging.getLogger(__name__)

ARTIFACT_NAME = "private/generic-worker/shell.html"
DOCKER_ARTIFACT_NAME = "private/docker-worker/shell.html"
CONTENT_TYPE = "text/html; charset=utf-8"
DOCKER_CONTENT_TYPE = "text/html"  # as docker-worker created it
REFERENCE_GRACE = 15 * 60


class InteractiveFeature(Feature):
    name = "interactive"
    config_gate = "enableInteractive"

    def __init__(self) -> None:
        self.server: ShellServer | None = None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if not config.enableInteractive:
            return
        server = ShellServer()
        host = str(config.publicIP) or "127.0.0.1"
        try:
            await server.start(host, int(config.interactivePort))
        except OSError as e:
            log.warning("interactive shell server cannot start (%s): tasks run without shells", e)
            return
        self.server = server
        log.info("interactive shells served on %s:%s", server.host, server.port)

    async def shutdown(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not payload_feature_flag(run.payload, "interactive"):
            return None
        return InteractiveRun(run, self.server)


def shell_page_url(root_url: str, socket_url: str, task_id: str, run_id: int) -> str:
    """Taskcluster's web UI shell page (query names per ui/src/views/Shell, as generic-worker)."""
    query = urlencode({"v": "2", "socketUrl": socket_url, "taskId": task_id, "runId": str(run_id)})
    return f"{root_url.rstrip('/')}/shell/?{query}"


class InteractiveRun(TaskFeature):
    def __init__(self, run: RunHandle, server: ShellServer | None) -> None:
        self.run = run
        self.server = server
        self.secret: str | None = None
        self.docker_payload = run.payload_kind == "docker"
        self.artifact_name = DOCKER_ARTIFACT_NAME if self.docker_payload else ARTIFACT_NAME
        self.target: ShellTarget | None = None
        self.keeping = False  # docker-worker keep-alive armed in the sandbox
        self.started = time.monotonic()
        self._changed = asyncio.Event()
        self._last_session_end: float | None = None

    def reserved_artifacts(self) -> Sequence[str]:
        return (self.artifact_name,)

    def _target(self) -> ShellTarget:
        """A host PTY where the engine gives one, else a shell inside the task's container."""
        run = self.run
        env = run.command_env()
        try:
            where = run.sandbox.shell_identity()
        except Unsupported:
            return ShellTarget(
                run.sandbox.task_dir, env, opener=lambda: run.sandbox.open_shell(env), on_change=self._on_change
            )
        if where is None:
            return ShellTarget(run.sandbox.task_dir, env)
        return ShellTarget(where[0], env, where[1], where[2], where[3])

    def _on_change(self) -> None:
        if self.target is not None and not self.target.sessions:
            self._last_session_end = time.monotonic()
        self._changed.set()

    async def start(self) -> None:
        run = self.run
        self.started = time.monotonic()  # docker-worker's minTime counts from the container's start
        if self.server is None or not self.server.running:
            run.log.warn("[interactive] no interactive shell on this worker (the shell server is not running)")
            return
        self.target = target = self._target()
        self.secret = self.server.register(target)
        run.log.add_secrets([self.secret])
        name = self.artifact_name
        try:
            url = shell_page_url(run.root_url, self.server.url(self.secret), run.task_id, run.run_id)
            expires = min(
                tctime.from_now(run.model.max_run_time + REFERENCE_GRACE), tctime.parse(run.task["expires"])
            )
            content_type = DOCKER_CONTENT_TYPE if self.docker_payload else CONTENT_TYPE
            await run.publisher.create_reference(name, url, content_type, tctime.to_json(expires))
        except Exception as e:  # best effort
            log.warning("interactive shell of %s/%s unavailable: %s", run.task_id, run.run_id, e)
            run.log.warn(f"[interactive] could not publish {name}: {e}")
            await self.server.unregister(self.secret)
            self.secret = None
            return
        if self.docker_payload:
            try:
                run.sandbox.keep_container_after_command()
                self.keeping = True
            except Unsupported as e:
                run.log.warn(f"[interactive] the container is not kept after the command: {e}")
        run.log.info(f"[interactive] shell available while the task runs: see artifact {name}")

    async def stop(self, outcome: RunOutcome) -> None:
        try:
            if self.keeping:
                await self._keep_alive(outcome)
        finally:
            if self.keeping:
                await self.run.sandbox.release_container()
            if self.server is not None and self.secret is not None:
                await self.server.unregister(self.secret)
                self.secret = None

    async def _keep_alive(self, outcome: RunOutcome) -> None:
        """docker-worker's keep-alive after a command that ran to its end (see the module doc)."""
        result = outcome.last_result
        if result is None or result.cancel_reason is not None or result.start_error is not None:
            return
        config = self.run.config
        hard_end = self.started + self.run.model.max_run_time + REFERENCE_GRACE
        min_end = self.started + int(config.interactiveMinTime)
        after_session = int(config.interactiveExpirationAfterSession)
        outcome.cancellation.on_cancel(lambda _reason: self._changed.set())
        announced = False
        while not outcome.cancellation.cancelled:
            self._changed.clear()  # before reading the sessions: a change from here on wakes us
            now = time.monotonic()
            if self.target is not None and self.target.sessions:
                until = hard_end
            else:
                until = min_end
                if self._last_session_end is not None:
                    until = max(until, self._last_session_end + after_session)
                until = min(until, hard_end)
            if now >= until:
                break
            if not announced:
                self.run.log.info(
                    "[interactive] the command finished; its container is kept for interactive sessions "
                    f"(at least {max(0, round(min_end - now))} s more, {after_session} s after the last session)"
                )
                announced = True
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(until - now, 60))
            except TimeoutError:
                pass
        if announced:
            self.run.log.info("[interactive] the container is no longer kept")
