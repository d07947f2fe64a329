"""WorkerLoop: claim tasks up to free capacity, run them, and decide when the worker exits.

spec/worker.md §1.5/§1.7: ``claimWork`` (the queue long-polls) for as many tasks as there is
free capacity (capped so resolved + running never exceeds ``numberOfTasksToRun``); each claim
becomes a ``TaskRun`` in its own asyncio task. A completion wakes the loop at once; empty or
failed claims are rate-limited with backoff so an outage never turns into a busy loop or a crash.
Exits: ``numberOfTasksToRun`` reached → 0, idle longer than ``idleTimeoutSecs`` → 68, SIGINT →
let running tasks finish → 71, SIGTERM → abort running tasks (worker-shutdown, logs still
uploaded) → 72, host unusable (tasks dir / disk space while idle) → 69.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcworker.cancellation import CancelReason
from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine
from tcworker.exitcodes import ExitCode
from tcworker.features.base import Feature
from tcworker.mounts import gc as disk_gc
from tcworker.sparedirs import DirRecycler
from tcworker.statefile import BackgroundWriter
from tcworker.taskdirs import leftover_task_dirs, remove_task_dirs, task_dir_name
from tcworker.tcapi.clients import Clients
from tcworker.worker.metrics import WorkerMetrics
from tcworker.worker.tasklog import Listener
from tcworker.worker.taskrun import TaskRun

log = logging.getLogger(__name__)

RESOLVED_COUNT_FILE = "tasks-resolved-count.txt"
STATE_FLUSH_WAIT = 30.0  # at exit: how long the state files may take to reach the disk
STATUS_FILE = "worker-status.json"
EMPTY_CLAIM_PAUSE = 0.5  # after a claim that returned at once with nothing (the queue long-polls)
MAX_ERROR_BACKOFF = 30.0
NO_TASK_LOG_EVERY = 60.0


class WorkerLoop:
    """The worker's main loop; ``run()`` returns the process exit code."""

    def __init__(
        self,
        config: WorkerConfig,
        engine: Engine,
        features: list[Feature],
        clients: Clients,
        state_dir: Path | None = None,
        log_listeners: Callable[[str, int], list[Listener]] | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.config = config
        self.engine = engine
        self.features = features
        self.clients = clients
        self.state_dir = state_dir or Path.cwd()
        self.log_listeners = log_listeners
        self.install_signal_handlers = install_signal_handlers
        # "taskId/runId" of each claim → its run (None while the features' claim hooks run)
        self.running: dict[str, TaskRun | None] = {}
        # Task dir names of runs from their claim until their sandbox is destroyed: the purge
        # thread checks it entry by entry, so a run claimed while the purge runs keeps its dir.
        self._dirs_in_use: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._shutdown = False  # SIGTERM: abort running tasks, exit 72
        self._stop = False  # SIGINT: finish running tasks, exit 71
        self._exit_after_drain: ExitCode | None = None
        self.resolved = self._read_resolved_count()
        self._last_active = time.monotonic()
        self._last_no_task_log = 0.0
        self.scratch_root = config.tasks_dir / ".runs"
        # Emptied scratch dirs kept for the next runs (tcworker.sparedirs: no mkdir/rmdir each).
        self._scratch_spares = DirRecycler(
            config.tasks_dir / ".spare" / "runs", keep=int(config.capacity) + 1
        )
        self.status_path = Path(tempfile.gettempdir()) / STATUS_FILE
        self._status_lock = asyncio.Lock()
        self._state = BackgroundWriter()
        self.metrics: WorkerMetrics | None = None  # set by the runner when metricsListenAddress is

    # ---- external controls (signal handlers, tcworker local) -------------------------------
    def request_shutdown(self) -> None:
        """SIGTERM: abort every running task with worker-shutdown, claim nothing more, exit 72."""
        if not self._shutdown:
            log.warning("graceful termination requested: aborting %d running task(s)", len(self.running))
        self._shutdown = True
        self._mark_stopping()
        for run in list(self.running.values()):
            if run is not None:
                run.abort(CancelReason.WORKER_STOPPING)
        self._wake.set()

    def request_stop(self, quiet: bool = False) -> None:
        """SIGINT: stop claiming, let running tasks finish, exit 71."""
        if not self._stop and not quiet:
            log.warning("interrupt: no more claims; waiting for %d running task(s)", len(self.running))
        self._stop = True
        self._mark_stopping()
        self._wake.set()

    def _mark_stopping(self) -> None:
        if self.metrics is not None:
            self.metrics.stopping = True

    # ---- state files ------------------------------------------------------------------------
    def _read_resolved_count(self) -> int:
        try:
            return int((self.state_dir / RESOLVED_COUNT_FILE).read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _status_text(self) -> str | None:
        ids = sorted({run.task_id if run else key.split("/")[0] for key, run in self.running.items()})
        return json.dumps({"currentTaskIds": ids}, indent=2) + "\n" if ids else None

    def _save_status(self) -> None:
        """``$TMPDIR/worker-status.json`` = the running task ids (removed when idle), written by
        the state thread (``statefile.BackgroundWriter``: the loop never waits for the disk)."""
        self._state.submit(self.status_path, self._status_text())

    async def _write_after_run(self, resolved: int, keep: set[str] | None) -> None:
        """Everything the loop records after a run: the resolved count and the status file (by
        the state thread), and the sweep of task directories no run uses (listed inline; a
        leftover is removed in a thread, as its size is unknown)."""
        self._state.submit(self.state_dir / RESOLVED_COUNT_FILE, f"{resolved}\n")
        self._save_status()
        if keep is not None and leftover_task_dirs(self.config.tasks_dir, keep, self._task_dir_in_use):
            await asyncio.to_thread(remove_task_dirs, self.config.tasks_dir, keep, self._task_dir_in_use)

    def _task_dir_in_use(self, name: str) -> bool:
        """Asked by the purge thread for each ``task_*`` dir it found: set lookups only, which
        are safe while the loop thread changes the sets."""
        return name in self._dirs_in_use or self.engine.owns_task_dir(name)

    # ---- main loop --------------------------------------------------------------------------
    async def run(self) -> ExitCode:
        loop = asyncio.get_running_loop()
        if self.install_signal_handlers:
            loop.add_signal_handler(signal.SIGTERM, self.request_shutdown)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
        try:
            self.config.tasks_dir.mkdir(parents=True, exist_ok=True)
            self.scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            log.error("cannot create tasks directory %s: %s", self.config.tasks_dir, e)
            return ExitCode.INTERNAL_ERROR
        if self.config.cleanUpTaskDirs:
            await asyncio.to_thread(remove_task_dirs, self.config.tasks_dir, (), self._task_dir_in_use)
            await asyncio.to_thread(self._scratch_spares.reset)
        try:
            return await self._loop()
        finally:
            if self.install_signal_handlers:
                loop.remove_signal_handler(signal.SIGTERM)
                loop.remove_signal_handler(signal.SIGINT)
            for run in list(self.running.values()):
                if run is not None:
                    run.abort(CancelReason.WORKER_STOPPING)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._save_status()
            if not await asyncio.to_thread(self._state.flush, STATE_FLUSH_WAIT):
                log.error("state files not written within %.0f s", STATE_FLUSH_WAIT)

    async def _loop(self) -> ExitCode:
        error_backoff = 1.0
        limit = self.config.numberOfTasksToRun
        while True:
            self._wake.clear()
            if self._shutdown:
                return await self._drain(ExitCode.WORKER_SHUTDOWN)
            if self._stop:
                return await self._drain(ExitCode.WORKER_STOPPED)
            if self._exit_after_drain is not None:
                return await self._drain(self._exit_after_drain)
            if limit and self.resolved >= limit:
                return await self._drain(ExitCode.TASKS_COMPLETE)
            free = self.config.capacity - len(self.running)
            if limit:
                free = min(free, limit - self.resolved - len(self.running))
            if not self.running and self._idle_expired():
                log.info("idle for more than %ss: exiting", self.config.idleTimeoutSecs)
                return ExitCode.IDLE_TIMEOUT
            if free <= 0:
                await self._wait(None)
                continue
            if not await self._ensure_disk_space():
                if not self.running:
                    return ExitCode.INTERNAL_ERROR
                await self._wait(None)
                continue
            started = time.monotonic()
            try:
                claims = await self._claim(free)
                error_backoff = 1.0
            except Exception as e:
                if self.metrics is not None:
                    self.metrics.queue_errors.inc()
                log.warning("claimWork failed: %s; retrying in %.0fs", e, error_backoff)
                await self._wait(error_backoff)
                error_backoff = min(error_backoff * 2, MAX_ERROR_BACKOFF)
                continue
            if claims is None:  # interrupted by a signal
                continue
            for claim in claims:
                self._start_run(claim)
            if not claims:
                now = time.monotonic()
                if now - self._last_no_task_log > NO_TASK_LOG_EVERY:
                    log.info("no task claimed")
                    self._last_no_task_log = now
                if now - started < EMPTY_CLAIM_PAUSE:
                    await self._wait(EMPTY_CLAIM_PAUSE)

    def _idle_expired(self) -> bool:
        idle = self.config.idleTimeoutSecs
        return bool(idle) and time.monotonic() - self._last_active >= idle

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until woken (completion, signal) or ``timeout``; bounded by the idle deadline."""
        if not self.running and self.config.idleTimeoutSecs:
            left = self.config.idleTimeoutSecs - (time.monotonic() - self._last_active)
            timeout = max(0.0, left) if timeout is None else min(timeout, max(0.0, left))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim(self, count: int) -> list[dict[str, Any]] | None:
        """claimWork, raced against signals; ``None`` when a signal cut it short."""
        queue = self.clients.queue()
        body = {"workerGroup": self.config.workerGroup, "workerId": self.config.workerId, "tasks": count}
        claim = asyncio.ensure_future(queue.claimWork(self.config.task_queue_id, body))
        woken = asyncio.ensure_future(self._wake.wait())
        timeout = None
        if not self.running and self.config.idleTimeoutSecs:
            timeout = max(0.1, self.config.idleTimeoutSecs - (time.monotonic() - self._last_active) + 0.5)
        try:
            while True:
                done, _ = await asyncio.wait(
                    {claim, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if claim in done:
                    result: dict[str, Any] = claim.result()
                    if self.metrics is not None:
                        self.metrics.queue_reached()
                    return list(result.get("tasks", []))
                if self._shutdown or self._stop:
                    claim.cancel()
                    return None
                if not done:  # idle deadline passed while the long poll is still open
                    if not self.running and self._idle_expired():
                        claim.cancel()
                        return None
                    timeout = None
                if woken in done:  # a completion: the claim keeps going, just re-arm
                    self._wake.clear()
                    woken = asyncio.ensure_future(self._wake.wait())
        finally:
            woken.cancel()

    async def _ensure_disk_space(self) -> bool:
        """Disk GC before a claim (caches, downloads, then the engine's images; spec §1.9)."""
        try:
            return await disk_gc.ensure_disk_space(self.config, self.engine)
        except Exception as e:
            log.error("disk space garbage collection failed: %s", e)
            return False

    def _start_run(self, claim: dict[str, Any]) -> None:
        key = f"{claim['status']['taskId']}/{int(claim['runId'])}"
        self.running[key] = None
        self._dirs_in_use.add(task_dir_name(*_split(key)))
        self._last_active = time.monotonic()
        log.info("claimed task %s", key)
        if self.metrics is not None:
            self.metrics.claimed.inc()
        task = asyncio.create_task(self._run_one(key, claim), name=f"task {key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _make_run(
        self, claim: dict[str, Any], on_reported: Callable[[tuple[str, str | None]], None]
    ) -> TaskRun:
        task_id = claim["status"]["taskId"]
        run_id = int(claim["runId"])
        listeners = self.log_listeners(task_id, run_id) if self.log_listeners else []
        return TaskRun(
            config=self.config,
            engine=self.engine,
            features=self.features,
            clients=self.clients,
            claim=claim,
            scratch_root=self.scratch_root,
            log_listeners=listeners,
            on_reported=on_reported,
            spares=self._scratch_spares,
        )

    async def _claimed(self, claim: dict[str, Any]) -> dict[str, Any]:
        """Every feature's ``claimed`` hook, in order (superseding may run another task)."""
        for feature in self.features:
            try:
                claim = await feature.claimed(claim)
            except Exception:
                log.exception("feature %s failed on claim of %s", feature.name, claim["status"]["taskId"])
        return claim

    async def _released(self, claim: dict[str, Any], resolution: tuple[str, str | None]) -> None:
        for feature in self.features:
            try:
                await feature.released(claim, resolution)
            except Exception:
                log.exception(
                    "feature %s failed after the run of %s", feature.name, claim["status"]["taskId"]
                )

    def _release(self, key: str, reason: str | None) -> None:
        """The run of ``key`` is reported: its slot is free, so the loop claims again at once
        while the run cleans up (a drain still waits for that before the worker exits)."""
        if key not in self.running:
            return
        del self.running[key]
        self.resolved += 1
        self._last_active = time.monotonic()
        if reason == "worker-shutdown" and not self._shutdown:
            self._exit_after_drain = ExitCode.WORKER_SHUTDOWN
        self._wake.set()

    async def _run_one(self, key: str, claim: dict[str, Any]) -> None:
        resolution: tuple[str, str | None] = ("exception", "internal-error")
        claimed_at = time.monotonic()
        self._save_status()
        to_run = claim
        run: TaskRun | None = None
        try:
            to_run = await self._claimed(claim)
            run = self._make_run(to_run, lambda res: self._release(key, res[1]))
            self.running[key] = run
            self._dirs_in_use.add(task_dir_name(run.task_id, run.run_id))
            if self._shutdown:
                run.abort(CancelReason.WORKER_STOPPING)
            resolution = await run.run()
        except BaseException:
            log.exception("task %s crashed the run wrapper", key)
        self._dirs_in_use.discard(task_dir_name(*_split(key)))
        if run is not None:
            self._dirs_in_use.discard(task_dir_name(run.task_id, run.run_id))
        if self.metrics is not None:
            self._count_run(run, resolution, claimed_at)
        await self._released(to_run, resolution)
        self._release(key, resolution[1])  # when the run ended without a report
        async with self._status_lock:  # one sweep of leftover task dirs at a time
            keep: set[str] | None = None
            if self.config.cleanUpTaskDirs:
                keep = {task_dir_name(r.task_id, r.run_id) for r in self.running.values() if r is not None}
                keep |= {task_dir_name(*_split(k)) for k in self.running}
            await self._write_after_run(self.resolved, keep)

    def _count_run(self, run: TaskRun | None, resolution: tuple[str, str | None], claimed_at: float) -> None:
        if self.metrics is None:
            return
        if run is None:
            self.metrics.run_ended(resolution, time.monotonic() - claimed_at)
            return
        if resolution[0] == "none" and run.claim.lost_reason:  # the queue resolved it (cancel, …)
            resolution = ("resolved-by-queue", run.claim.lost_reason)
        self.metrics.run_ended(
            resolution,
            time.monotonic() - claimed_at,
            to_start=None if run.prepared_at is None else run.prepared_at - claimed_at,
            uploaded_bytes=run.publisher.uploaded_bytes,
            upload_seconds=run.publisher.upload_seconds,
            reclaim_failures=run.claim.reclaim_failures,
        )

    async def _drain(self, code: ExitCode) -> ExitCode:
        self._mark_stopping()
        if self._tasks:
            log.info("waiting for %d running task(s) before exiting %d", len(self._tasks), int(code))
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return code


def _split(key: str) -> tuple[str, int]:
    task_id, _, run_id = key.partition("/")
    return task_id, int(run_id)
