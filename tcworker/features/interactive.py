"""``features.interactive`` (generic-worker payloads): a shell in the running task over a websocket.

Per worker process, ``initialise`` starts one ``ShellServer`` on ``interactivePort`` (on
``publicIP``, else 127.0.0.1). Per run, ``start`` registers the task's directory, environment
(``run.command_env()``) and user (``Sandbox.shell_identity``) under a fresh secret and creates
the private reference artifact ``private/generic-worker/shell.html`` (expires after the max run
time plus 15 minutes, as generic-worker) pointing at Taskcluster's shell page with the
websocket URL in ``socketUrl``. ``stop`` (the task ended) closes every session and kills its
processes, as generic-worker ends sessions with the task. Best effort, as upstream: a server that
cannot start or an engine without host shells is a warning, never a failed task. The secret is
added to the log's secrets and is only ever in the private artifact.
"""

from __future__ import annotations

import logging
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
CONTENT_TYPE = "text/html; charset=utf-8"
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
        if run.payload_kind != "generic" or not payload_feature_flag(run.payload, "interactive"):
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

    def reserved_artifacts(self) -> Sequence[str]:
        return (ARTIFACT_NAME,)

    async def start(self) -> None:
        run = self.run
        if self.server is None or not self.server.running:
            run.log.warn("[interactive] no interactive shell on this worker (the shell server is not running)")
            return
        try:
            where = run.sandbox.shell_identity()
        except Unsupported as e:
            run.log.warn(f"[interactive] no interactive shell for this task: {e}")
            return
        target = ShellTarget(run.sandbox.task_dir, run.command_env())
        if where is not None:
            target = ShellTarget(where[0], run.command_env(), where[1], where[2], where[3])
        self.secret = self.server.register(target)
        run.log.add_secrets([self.secret])
        try:
            url = shell_page_url(run.root_url, self.server.url(self.secret), run.task_id, run.run_id)
            expires = min(
                tctime.from_now(run.model.max_run_time + REFERENCE_GRACE), tctime.parse(run.task["expires"])
            )
            await run.publisher.create_reference(ARTIFACT_NAME, url, CONTENT_TYPE, tctime.to_json(expires))
        except Exception as e:  # best effort
            log.warning("interactive shell of %s/%s unavailable: %s", run.task_id, run.run_id, e)
            run.log.warn(f"[interactive] could not publish {ARTIFACT_NAME}: {e}")
            await self.server.unregister(self.secret)
            self.secret = None
            return
        run.log.info(f"[interactive] shell available while the task runs: see artifact {ARTIFACT_NAME}")

    async def stop(self, outcome: RunOutcome) -> None:
        if self.server is not None and self.secret is not None:
            await self.server.unregister(self.secret)
            self.secret = None
