"""TaskRun: one claimed run from validation to report — the only place a run is resolved.

Flow (spec/worker.md §1.8, design G3/G4): open the task log → header → validate the payload
(schema, payload kind vs engine, maxRunTime limit, toggles this build cannot serve) → per
feature: pool gate, scopes, reserved artifact names, ``admit`` → ``engine.prepare`` → features
start in order inside one ``AsyncExitStack`` (each ``stop`` registered before its ``start``) →
stops in reverse, every one, errors collected → final log lines → backing log uploaded (the
live-log feature turned ``logs.live`` into a link to it while stopping) → report
(``errors.resolution_of`` over the collected errors and the run's one ``Cancellation``) → sandbox
destroyed. Nothing escapes ``run()``: a bug becomes ``exception/internal-error``. Features see the
run only through its ``RunHandle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tcworker import __version__
from tcworker import payload as payload_mod
from tcworker.cancellation import CancelReason
from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, RunContext, Sandbox
from tcworker.errors import InternalError, TaskError, resolution_of
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature
from tcworker.sparedirs import DirRecycler
from tcworker.taskdirs import task_dir_name
from tcworker.tcapi.claim import RunClaim
from tcworker.tcapi.clients import Clients, status_code
from tcworker.tcapi.upload import ArtifactPublisher
from tcworker.worker import admission
from tcworker.worker.logpublish import LogPublication
from tcworker.worker.tasklog import Listener, TaskLog

log = logging.getLogger(__name__)


_SETTINGS: dict[tuple[int, str], tuple[WorkerConfig, str]] = {}


def _settings_lines(config: WorkerConfig, engine_name: str) -> str:
    """The header's worker settings (the same for every run of a worker): rendered once per
    config, as ``platform.platform()`` reads the interpreter binary and the JSON is indented.
    (Keyed by identity: the frozen config holds dicts, so it cannot be hashed.)"""
    key = (id(config), engine_name)
    cached = _SETTINGS.get(key)
    if cached is None or cached[0] is not config:
        cached = _SETTINGS[key] = (config, _render_settings(config, engine_name))
    return cached[1]


def _render_settings(config: WorkerConfig, engine_name: str) -> str:
    metadata = dict(config.workerTypeMetadata)
    metadata["tcworker"] = {
        "version": __version__,
        "engine": engine_name,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return "\n".join(
        (
            f"Worker Type ({config.task_queue_id}) settings:",
            "  " + json.dumps(metadata, indent=2, sort_keys=True).replace("\n", "\n  "),
            f"Worker: tcworker {__version__} ({engine_name} engine), "
            f"worker {config.workerGroup}/{config.workerId}",
        )
    )


class TaskRun:
    """One run of one task."""

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
        on_reported: Callable[[tuple[str, str | None]], None] | None = None,
        spares: DirRecycler | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.features = features
        self.clients = clients
        self.task: Mapping[str, Any] = claim["task"]
        self.task_id: str = claim["status"]["taskId"]
        self.run_id: int = int(claim["runId"])
        raw_payload = self.task.get("payload")
        self.payload: Mapping[str, Any] = raw_payload if isinstance(raw_payload, Mapping) else {}
        self.payload_kind = payload_mod.payload_kind(self.payload)
        self.outcome = RunOutcome()
        self.cancellation = self.outcome.cancellation
        self.scratch_dir = scratch_root / task_dir_name(self.task_id, self.run_id)
        self._spares = spares  # emptied scratch dirs of earlier runs, renamed into place
        self._sandbox: Sandbox | None = None
        self._model: payload_mod.RunModel | None = None
        self._log_listeners = log_listeners or []
        # Called once the run is reported, before the clean-up: the worker's slot is free then.
        self._on_reported = on_reported
        self.claim = RunClaim.from_claim(
            clients,
            dict(claim),
            reclaim_interval=float(config.reclaimIntervalSecs),
            on_lost=self._claim_lost,
            status_interval=float(config.statusPollIntervalSecs),
        )
        self.publisher = ArtifactPublisher(
            clients,
            lambda: self.claim.queue,
            self.task_id,
            self.run_id,
            tmp_dir=self.scratch_dir,
            gzip=not config.createObjectArtifacts,
        )
        self._log: TaskLog | None = None  # opened in run()
        self._handle: RunHandle | None = None
        self._log_publication = LogPublication(
            self.publisher, self.task["expires"], self.scratch_dir, f"{self.task_id}/{self.run_id}"
        )
        self.resolution: tuple[str, str | None] = ("none", None)
        self.prepared_at: float | None = None  # monotonic time the sandbox was ready (for metrics)

    @property
    def log(self) -> TaskLog:
        if self._log is None:
            raise RuntimeError("task log not open yet")
        return self._log

    @property
    def abort_reason(self) -> CancelReason | None:
        return self.cancellation.reason

    def abort(self, reason: CancelReason) -> None:
        """Record ``reason`` (the first one wins) and stop the running command, if any (G7)."""
        self.cancellation.cancel(reason)

    def reserved_env(self, run: RunHandle) -> dict[str, str]:
        """Variables the payload cannot override (spec/worker.md §2.2; docker-worker: §3.3)."""
        env = {
            "TASK_ID": self.task_id,
            "RUN_ID": str(self.run_id),
            "TASK_WORKDIR": run.sandbox.workdir_in_task,
            "TASK_GROUP_ID": str(self.task.get("taskGroupId", "")),
            "TASKCLUSTER_ROOT_URL": self.clients.root_url,
        }
        config = self.config
        if self.payload_kind == "docker":
            env.update(
                TASKCLUSTER_WORKER_TYPE=config.workerType,
                TASKCLUSTER_WORKER_GROUP=config.workerGroup,
                TASKCLUSTER_PUBLIC_IP=config.publicIP,
                TASKCLUSTER_INSTANCE_TYPE=config.instanceType,
                TASKCLUSTER_WORKER_LOCATION=config.workerLocation,
            )
        else:
            if config.workerLocation:
                env["TASKCLUSTER_WORKER_LOCATION"] = config.workerLocation
            if config.instanceType:
                env["TASKCLUSTER_INSTANCE_TYPE"] = config.instanceType
        return env

    def _mask_credentials(self, credentials: Mapping[str, Any]) -> None:
        """The task log's one masker gets every credential secret that could reach it (and again
        the new ones after each reclaim): the worker's and the run's access token, and the seed
        and signature of their certificates. A certificate's other fields (scopes, times,
        issuer) are not secret — without the access token it is useless — and masking the whole
        JSON with its encoded forms made building the masker ~6x slower, per task."""
        if self._log is None:
            return
        private = self.config.private
        values = [private.accessToken, str(credentials.get("accessToken", ""))]
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
        cause = CancelReason.CANCELLED if reason == "canceled" else CancelReason.CLAIM_LOST
        self.cancellation.cancel(cause, reason)

    # ---- the run ---------------------------------------------------------------------------
    async def run(self) -> tuple[str, str | None]:
        """Run to the end and report; returns the resolution ``(state, reason)``."""
        if self._spares is None or not self._spares.take(self.scratch_dir, 0o700):
            self.scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._log = TaskLog(self.scratch_dir / "live_backing.log")
        self._mask_credentials(self.claim.credentials)
        self.claim.on_reclaimed(self._mask_credentials)
        self._log_publication.follow(self.log)
        for listener in self._log_listeners:
            self.log.add_listener(listener)
        self._handle = handle = RunHandle(
            config=self.config,
            clients=self.clients,
            claim=self.claim,
            task=self.task,
            payload=self.payload,
            payload_kind=self.payload_kind,
            engine_name=self.engine.name,
            log=self.log,
            scratch_dir=self.scratch_dir,
            publisher=self.publisher,
            outcome=self.outcome,
            reserved_env=self.reserved_env,
        )
        self.claim.start()
        started = time.monotonic()
        errors = self.outcome.errors
        try:
            self._write_header()
            try:
                await self._run_pipeline(self._handle)
            except TaskError as e:
                errors.append(e)
            except Exception as e:  # a worker bug: internal-error, the worker goes on
                log.exception("internal error running task %s/%s", self.task_id, self.run_id)
                self.log.error("".join(traceback.format_exception_only(e)).rstrip())
                errors.append(InternalError(f"worker error: {e!r}"))
            self.resolution = resolution_of(errors, self.cancellation.reason)
            self._write_footer(errors, time.monotonic() - started)
            ran = time.monotonic()
            await self._publish_logs(errors)
            await handle.settle()  # artifact calls left running by features (live log's link)
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
            await handle.settle()  # no-op unless the run failed before its report
            await self.claim.stop()
            if self._sandbox is not None:
                try:
                    await self._sandbox.destroy()
                except Exception:
                    log.exception("destroying the sandbox of %s/%s failed", self.task_id, self.run_id)
            self.log.close()
            if self._log_publication.small and not (self._model and self._model.artifacts):
                self._drop_scratch()  # a short log and nothing staged: cheaper than a thread trip
            else:
                await asyncio.to_thread(self._drop_scratch)
        return self.resolution

    def _drop_scratch(self) -> None:
        """The log's gzip copy and the scratch dir (blocking: in one thread trip, unless all
        there is to remove is a short log)."""
        self._log_publication.discard()
        if self.config.cleanUpTaskDirs and not (self._spares and self._spares.keep(self.scratch_dir)):
            shutil.rmtree(self.scratch_dir, True)

    def _write_header(self) -> None:
        # One write for the whole header (one masker pass, one write+flush, one listener call).
        self.log.info(
            f"{_settings_lines(self.config, self.engine.name)}\nTask ID: {self.task_id}\nRun ID: {self.run_id}"
        )

    async def _run_pipeline(self, run: RunHandle) -> None:
        self._model = admission.validate(run, self.engine, self.features)
        run.attach_model(self._model)
        # The live log's name is reserved by the live-log feature when it runs.
        run.reserved_artifacts[self._model.backing_log_name] = "log"
        task_features = await admission.gate_features(run, self.features)
        context = RunContext(
            task_id=self.task_id,
            run_id=self.run_id,
            task=self.task,
            payload=self.payload,
            payload_kind=self.payload_kind,
            log=self.log,
            queue=self.claim.queue,
            index=self.clients.index(self.claim.credentials),
            root_url=self.clients.root_url,
        )
        self._sandbox = await self.engine.prepare(context)
        self.prepared_at = time.monotonic()
        run.attach_sandbox(self._sandbox)  # aborts it at once when the run was cancelled meanwhile
        async with contextlib.AsyncExitStack() as stack:
            for tf in task_features:
                stack.push_async_callback(self._stop_feature, tf)
                try:
                    await tf.start()
                except TaskError as e:
                    self.outcome.errors.append(e)
                    break
            run.hold_before_report()  # what features leave running as they stop waits for the log's artifact

    async def _stop_feature(self, tf: TaskFeature) -> None:
        try:
            await tf.stop(self.outcome)
        except TaskError as e:
            self.outcome.errors.append(e)
        except Exception as e:
            log.exception("feature %s failed to stop", type(tf).__name__)
            self.log.error(f"{type(tf).__name__} failed while stopping: {e!r}")
            self.outcome.errors.append(InternalError(f"{type(tf).__name__}: {e!r}"))

    def _write_footer(self, errors: list[BaseException], duration: float) -> None:
        state, reason = self.resolution
        if errors:
            self.log.error(str(errors[0]) or type(errors[0]).__name__)
        elif self.cancellation.reason is not None:
            self.log.error(f"Task aborted - {self.cancellation.reason}")
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
        release = self._handle.release_before_report if self._handle is not None else None
        try:
            await self._log_publication.publish(self.log, backing, on_created=release)
        except TaskError as e:
            log.error("publishing the log of %s/%s failed: %s", self.task_id, self.run_id, e)
            errors.append(e)
            if self.resolution == ("completed", None):
                self.resolution = e.resolution
        finally:
            if release is not None:
                release()

    async def _report(self) -> None:
        """One report call (the client retries transient failures); a 409 means the queue
        resolved the run already."""
        await self.claim.stop()
        state, reason = self.resolution
        if state == "none" or self.claim.lost:
            log.info("task %s/%s: no report (run resolved by the queue)", self.task_id, self.run_id)
            return
        q = self.claim.queue
        try:
            if state == "completed":
                await q.reportCompleted(self.task_id, str(self.run_id))
            elif state == "failed":
                await q.reportFailed(self.task_id, str(self.run_id))
            else:
                await q.reportException(self.task_id, str(self.run_id), {"reason": reason})
        except Exception as e:
            if status_code(e) == 409:
                log.warning("report of %s/%s refused (409): run already resolved", self.task_id, self.run_id)
            else:
                log.error("report of %s/%s failed: %s", self.task_id, self.run_id, e)
            return
        log.info("task %s/%s resolved %s%s", self.task_id, self.run_id, state, f"/{reason}" if reason else "")
