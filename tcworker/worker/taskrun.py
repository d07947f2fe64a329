"""TaskRun: one claimed run from validation to report — the only place a run is resolved.

Flow (spec/worker.md §1.8, design G3/G4): open the task log → header → validate the payload
(schema, payload kind vs engine, maxRunTime limit, toggles this build cannot serve) → per
feature: pool gate, scopes, reserved artifact names → ``engine.prepare`` → features start in
order inside one ``AsyncExitStack`` (each ``stop`` registered before its ``start``) → stops in
reverse, every one, errors collected → final log lines → backing log uploaded (the live-log
feature turned ``logs.live`` into a link to it while stopping) →
report (``resolution_of``: first error decides, worker-shutdown wins, cancelled reports nothing)
→ sandbox destroyed. Nothing escapes ``run()``: a bug becomes ``exception/internal-error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import platform
import shutil
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from tcworker import __version__
from tcworker.config import WorkerConfig
from tcworker.engines.base import CancelReason, Engine, ExtraArtifact, RunContext, Sandbox
from tcworker.errors import (
    InternalError,
    TaskCancelled,
    TaskError,
    WorkerShutdown,
    resolution_of,
)
from tcworker.features.base import Feature, RunOutcome, TaskFeature
from tcworker.worker import admission
from tcworker.worker import payload as payload_mod
from tcworker.worker.clients import Clients, is_transient, status_code
from tcworker.worker.logpublish import LogPublication
from tcworker.worker.status import RunStatus
from tcworker.worker.taskdirs import task_dir_name
from tcworker.worker.tasklog import Listener, TaskLog
from tcworker.worker.upload import ArtifactPublisher

log = logging.getLogger(__name__)


@functools.cache
def _platform_name() -> str:
    """``platform.platform()`` reads the interpreter binary (libc version): once per process."""
    return platform.platform()


class TaskRun:
    """One run of one task; implements ``tcworker.features.base.RunHandle`` for the features."""

    def __init__(
        self,
        *,
        config: WorkerConfig,
        engine: Engine,
        features: list[Feature],
        clients: Clients,
        claim: Mapping[str, Any],
        scratch_root: Path,
        log_listeners: list[Listener] | None = None,
        notes: list[str] | None = None,
        extra_artifacts: Callable[[Path], ExtraArtifact | None] | None = None,
        before_log_upload: Callable[[tuple[str, str | None], TaskLog], Awaitable[None]] | None = None,
        on_reported: Callable[[tuple[str, str | None]], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.engine_name = engine.name
        self.features = features
        self.clients = clients
        self.task: Mapping[str, Any] = claim["task"]
        self.task_id: str = claim["status"]["taskId"]
        self.run_id: int = int(claim["runId"])
        raw_payload = self.task.get("payload")
        self.payload: Mapping[str, Any] = raw_payload if isinstance(raw_payload, Mapping) else {}
        self.payload_kind = payload_mod.payload_kind(self.payload)
        self._model: payload_mod.RunModel | None = None  # set once the payload is valid
        self.feature_env: dict[str, str] = {}
        self.reserved_artifacts: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.outcome = RunOutcome()
        self.abort_reason: CancelReason | None = None
        self.scratch_dir = scratch_root / task_dir_name(self.task_id, self.run_id)
        self._sandbox: Sandbox | None = None
        self._log_listeners = log_listeners or []
        self._notes = notes or []
        # Produces an extra artifact for this run (superseding's public/supersedes.json).
        self.extra_artifacts = extra_artifacts
        # Called with the resolution once it is known, while the task log is still open
        # (superseding resolves the secondary runs there and logs what the queue said).
        self._before_log_upload = before_log_upload
        # Called once the run is reported, before the clean-up: the worker's slot is free then.
        self._on_reported = on_reported
        self.status = RunStatus(
            clients,
            self.task_id,
            self.run_id,
            claim["credentials"],
            claim["takenUntil"],
            reclaim_interval=float(config.reclaimIntervalSecs),
            on_lost=self._claim_lost,
            on_reclaimed=self._mask_credentials,
        )
        self.publisher = ArtifactPublisher(
            clients,
            lambda: self.status.queue,
            self.task_id,
            self.run_id,
            tmp_dir=self.scratch_dir,
        )
        self._log: TaskLog | None = None  # opened in run()
        self._log_publication = LogPublication(
            self.publisher, self.task["expires"], self.scratch_dir, f"{self.task_id}/{self.run_id}"
        )
        self.resolution: tuple[str, str | None] = ("none", None)

    # ---- RunHandle surface -------------------------------------------------------------
    @property
    def log(self) -> TaskLog:
        if self._log is None:
            raise RuntimeError("task log not open yet")
        return self._log

    @property
    def model(self) -> payload_mod.RunModel:
        if self._model is None:
            raise RuntimeError("payload not validated yet")
        return self._model

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("sandbox not prepared yet")
        return self._sandbox

    @property
    def queue(self) -> Any:
        return self.status.queue

    @property
    def task_queue_id(self) -> str:
        return self.config.task_queue_id

    def abort(self, reason: CancelReason) -> None:
        """Record ``reason`` (the first one wins) and stop the running command, if any (G7)."""
        if self.abort_reason is not None:
            return
        self.abort_reason = reason
        self.outcome.abort_reason = reason
        if self._sandbox is not None:
            self._sandbox.abort(reason)

    def command_env(self) -> dict[str, str]:
        """base env ← payload env ← feature env ← reserved variables (spec/worker.md §2.2)."""
        env = dict(self.sandbox.base_env())
        env.update(self.model.env)
        env.update(self.feature_env)
        env.update(
            TASK_ID=self.task_id,
            RUN_ID=str(self.run_id),
            TASK_WORKDIR=self.sandbox.workdir_in_task,
            TASK_GROUP_ID=str(self.task.get("taskGroupId", "")),
            TASKCLUSTER_ROOT_URL=self.clients.root_url,
        )
        if self.config.workerLocation:
            env["TASKCLUSTER_WORKER_LOCATION"] = self.config.workerLocation
        if self.config.instanceType:
            env["TASKCLUSTER_INSTANCE_TYPE"] = self.config.instanceType
        return env

    def _mask_credentials(self, credentials: Mapping[str, str]) -> None:
        """The task log's one masker gets every credential that could reach it (and again the new
        ones after each reclaim): the worker's and the run's access token and certificate, and the
        certificate's seed and signature in case a task prints it re-formatted."""
        if self._log is None:
            return
        private = self.config.private
        values = [private.accessToken, private.certificate]
        values += [str(credentials.get("accessToken", "")), str(credentials.get("certificate", ""))]
        for certificate in (private.certificate, credentials.get("certificate")):
            try:
                parsed = json.loads(certificate) if certificate else None
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                values += [str(parsed.get("seed", "")), str(parsed.get("signature", ""))]
        self._log.add_secrets([v for v in values if v])

    def _claim_lost(self, reason: str) -> None:
        self.log.error(f"Task run is no longer ours (queue says: {reason}); aborting it")
        self.abort(CancelReason.CANCELLED)

    # ---- the run ---------------------------------------------------------------------------
    async def run(self) -> tuple[str, str | None]:
        """Run to the end and report; returns the resolution ``(state, reason)``."""
        self.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = TaskLog(self.scratch_dir / "live_backing.log")
        self._mask_credentials(self.status.credentials)
        self._log_publication.follow(self.log)
        for listener in self._log_listeners:
            self.log.add_listener(listener)
        self.status.start()
        started = time.monotonic()
        errors = self.outcome.errors
        try:
            self._write_header()
            try:
                await self._run_pipeline()
            except TaskError as e:
                errors.append(e)
            except Exception as e:  # a worker bug: internal-error, the worker goes on
                log.exception("internal error running task %s/%s", self.task_id, self.run_id)
                self.log.error("".join(traceback.format_exception_only(e)).rstrip())
                errors.append(InternalError(f"worker error: {e!r}"))
            self._add_abort_error(errors)
            self.resolution = resolution_of(errors)
            self._write_footer(errors, time.monotonic() - started)
            if self._before_log_upload is not None:
                try:
                    await self._before_log_upload(self.resolution, self.log)
                except Exception:
                    log.exception("before-log-upload hook of %s/%s failed", self.task_id, self.run_id)
            ran = time.monotonic()
            await self._publish_logs(errors)
            uploaded = time.monotonic()
            await self._report()
            if self._on_reported is not None:
                self._on_reported(self.resolution)
            log.debug(
                "task %s/%s timings: run %.1fms, log upload %.1fms, report %.1fms",
                self.task_id,
                self.run_id,
                (ran - started) * 1000,
                (uploaded - ran) * 1000,
                (time.monotonic() - uploaded) * 1000,
            )
        except Exception:
            log.exception("cannot finish task %s/%s", self.task_id, self.run_id)
        finally:
            await self.status.stop()
            if self._sandbox is not None:
                try:
                    await self._sandbox.destroy()
                except Exception:
                    log.exception("destroying the sandbox of %s/%s failed", self.task_id, self.run_id)
            self.log.close()
            await asyncio.to_thread(self._drop_scratch)
        return self.resolution

    def _drop_scratch(self) -> None:
        """The log's gzip copy and the scratch dir, in one trip off the loop (blocking)."""
        self._log_publication.discard()
        if self.config.cleanUpTaskDirs:
            shutil.rmtree(self.scratch_dir, True)

    def _write_header(self) -> None:
        metadata = dict(self.config.workerTypeMetadata)
        metadata["tcworker"] = {
            "version": __version__,
            "engine": self.engine_name,
            "python": platform.python_version(),
            "platform": _platform_name(),
        }
        self.log.info(f"Worker Type ({self.config.task_queue_id}) settings:")
        self.log.info("  " + json.dumps(metadata, indent=2, sort_keys=True).replace("\n", "\n  "))
        self.log.info(
            f"Worker: tcworker {__version__} ({self.engine_name} engine), "
            f"worker {self.config.workerGroup}/{self.config.workerId}"
        )
        self.log.info(f"Task ID: {self.task_id}")
        self.log.info(f"Run ID: {self.run_id}")
        for note in self._notes:
            self.log.info(note)

    async def _run_pipeline(self) -> None:
        self._model = admission.validate(self)
        # The live log's name is reserved by the live-log feature when it runs.
        self.reserved_artifacts[self.model.backing_log_name] = "log"
        task_features = await admission.gate_features(self)
        context = RunContext(
            task_id=self.task_id,
            run_id=self.run_id,
            task=self.task,
            payload=self.payload,
            payload_kind=self.payload_kind,
            log=self.log,
            queue=self.status.queue,
            root_url=self.clients.root_url,
            expand_scopes=self.clients.expand_scopes,
            extra=self.extra,
        )
        self._sandbox = await self.engine.prepare(context)
        if self.abort_reason is not None:
            self._sandbox.abort(self.abort_reason)
        async with contextlib.AsyncExitStack() as stack:
            for tf in task_features:
                stack.push_async_callback(self._stop_feature, tf)
                try:
                    await tf.start()
                except TaskError as e:
                    self.outcome.errors.append(e)
                    break

    async def _stop_feature(self, tf: TaskFeature) -> None:
        try:
            await tf.stop(self.outcome)
        except TaskError as e:
            self.outcome.errors.append(e)
        except Exception as e:
            log.exception("feature %s failed to stop", type(tf).__name__)
            self.log.error(f"{type(tf).__name__} failed while stopping: {e!r}")
            self.outcome.errors.append(InternalError(f"{type(tf).__name__}: {e!r}"))

    def _add_abort_error(self, errors: list[BaseException]) -> None:
        """An abort that hit between commands or during uploads still decides the resolution."""
        reason = self.abort_reason
        if reason is CancelReason.CANCELLED and not any(isinstance(e, TaskCancelled) for e in errors):
            errors.append(TaskCancelled(f"task was cancelled ({self.status.lost_reason})"))
        elif reason is CancelReason.WORKER_STOPPING and not any(
            isinstance(e, WorkerShutdown) for e in errors
        ):
            errors.append(WorkerShutdown("worker is shutting down"))

    def _write_footer(self, errors: list[BaseException], duration: float) -> None:
        state, reason = self.resolution
        if errors:
            self.log.error(str(errors[0]) or type(errors[0]).__name__)
        sentences = {
            "completed": "completed successfully",
            "failed": "failed: see the errors above",
            "none": "ended without a report: the queue had already resolved this run",
        }
        text = sentences.get(state) or f"resolved as exception/{reason}"
        hints = {
            "malformed-payload": "fix the task definition; retrying it unchanged cannot succeed",
            "worker-shutdown": "the queue will retry it on another worker",
            "intermittent-task": "the queue will retry it if retries remain",
            "internal-error": "this is a worker problem, please report it",
            "resource-unavailable": "a service the task needs was unavailable; retry later",
        }
        hint = f" ({hints[reason]})" if reason in hints else ""
        self.log.info(f"Task {self.task_id} run {self.run_id} {text}{hint}.")

    async def _publish_logs(self, errors: list[BaseException]) -> None:
        """Backing log (object, gzip-compressible text), before the report. Its artifact is
        created only now that the log is complete, so it is never listed without content."""
        self.log.close()
        model = self._model
        backing = model.backing_log_name if model else payload_mod.DEFAULT_BACKING_LOG
        enabled = model.backing_log_enabled if model else True
        if not enabled:
            return
        try:
            await self._log_publication.publish(self.log, backing)
        except TaskError as e:
            log.error("publishing the log of %s/%s failed: %s", self.task_id, self.run_id, e)
            errors.append(e)
            if self.resolution == ("completed", None):
                self.resolution = e.resolution

    async def _report(self) -> None:
        await self.status.stop()
        state, reason = self.resolution
        if state == "none" or self.status.lost:
            log.info("task %s/%s: no report (run resolved by the queue)", self.task_id, self.run_id)
            return
        q = self.status.queue
        call: Callable[[], Any]
        if state == "completed":
            call = lambda: q.reportCompleted(self.task_id, str(self.run_id))  # noqa: E731
        elif state == "failed":
            call = lambda: q.reportFailed(self.task_id, str(self.run_id))  # noqa: E731
        else:
            call = lambda: q.reportException(self.task_id, str(self.run_id), {"reason": reason})  # noqa: E731
        for attempt in range(4):
            try:
                await call()
                log.info(
                    "task %s/%s resolved %s%s",
                    self.task_id,
                    self.run_id,
                    state,
                    f"/{reason}" if reason else "",
                )
                return
            except Exception as e:
                if status_code(e) == 409:
                    log.warning(
                        "report of %s/%s refused (409): run already resolved", self.task_id, self.run_id
                    )
                    return
                if not is_transient(e) or attempt == 3:
                    log.error("report of %s/%s failed: %s", self.task_id, self.run_id, e)
                    return
                await asyncio.sleep(2**attempt)
