"""resourceMonitor: memory figures per command, and an abort before the host runs out of memory.

generic-worker 83.4's feature (spec/worker.md §2.4), on every engine and both payload kinds:
while each command runs, the system's memory (psutil's ``virtual_memory``, what gopsutil gives
generic-worker) and the task's own memory (``Sandbox.memory_usage_bytes``: the task's cgroup on
host engines that have one, else the process tree's RSS; the container's stats on docker) are
sampled every 0.5 s, off the event loop. The command's footer gets generic-worker's four lines —
``Average Available System Memory``, ``Average System Memory Used``, ``Peak System Memory Used``,
``Total System Memory`` — plus ours, ``Average Task Memory Used`` and ``Peak Task Memory Used``.

When used memory stays above ``maxMemoryUsagePercent`` **and** available memory below
``minAvailableMemoryBytes`` for more than ``allowedHighMemoryDurationSecs``, the monitor writes
generic-worker's warning and aborts the run through the run's one cancellation
(``CancelReason.HIGH_MEMORY``, detail naming the thresholds), so the engine kills the task at once
and ``errors.resolution_of`` resolves it ``failed``. ``disableOOMProtection`` only warns.

Why a feature with a per-command hook (``RunHandle.command_watchers``) rather than code in the
command executor: the pool gate (``enableResourceMonitor``) and the payload toggle
(``features.resourceMonitor``) are a feature's business, the executor stays about running
commands, and generic-worker has it as a feature that wraps each command the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import psutil

from tcworker.cancellation import CancelReason
from tcworker.durations import go_duration
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 0.5  # seconds, as generic-worker's ticker
LABEL_WIDTH = 32  # the command footer's label column
# The host's memory figures are shared by the runs that sample within this age of each other:
# /proc/meminfo costs ~0.08 ms to read and parse, paid at least once by every command.
HOST_SAMPLE_MAX_AGE = 0.05  # seconds, a tenth of SAMPLE_INTERVAL

_host_sample: tuple[float, Any] | None = None


def _host_memory() -> Any:
    """``psutil.virtual_memory()``, at most ``HOST_SAMPLE_MAX_AGE`` old (the figures are
    host-wide, so every run's sampler can use the same one; safe from any thread)."""
    global _host_sample
    now = time.monotonic()
    sample = _host_sample
    if sample is None or now - sample[0] > HOST_SAMPLE_MAX_AGE:
        sample = _host_sample = (now, psutil.virtual_memory())
    return sample[1]


def format_memory(size: float) -> str:
    """generic-worker's ``FormatMemoryString``: B (Go's ``%f``), KiB, MiB or GiB with 2 decimals."""
    if size < 1024:
        return f"{size:f} B"
    if size < 1024**2:
        return f"{size / 1024:.2f} KiB"
    if size < 1024**3:
        return f"{size / 1024**2:.2f} MiB"
    return f"{size / 1024**3:.2f} GiB"


@dataclass(frozen=True)
class Thresholds:
    """The worker config's abort rule."""

    max_used_percent: int
    min_available_bytes: int
    allowed_seconds: int
    warn_only: bool  # disableOOMProtection

    def exceeded(self, used_percent: float, available: int) -> bool:
        return used_percent > self.max_used_percent and available < self.min_available_bytes

    def describe(self) -> str:
        return (
            f"above {self.max_used_percent}% and available memory less than "
            f"{format_memory(self.min_available_bytes)}"
        )


@dataclass(frozen=True)
class Sample:
    """One measurement: the system's memory and the task's (``None`` when the engine cannot tell)."""

    total: int
    used: int
    available: int
    used_percent: float
    task: int | None


class CommandUsage:
    """The samples of one command: sums for the averages, and the peaks."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.available_sum = 0
        self.used_sum = 0
        self.used_peak = 0
        self.task_count = 0
        self.task_sum = 0
        self.task_peak = 0

    def add(self, sample: Sample) -> None:
        self.count += 1
        self.total = self.total or sample.total
        self.available_sum += sample.available
        self.used_sum += sample.used
        self.used_peak = max(self.used_peak, sample.used)
        if sample.task is not None:
            self.task_count += 1
            self.task_sum += sample.task
            self.task_peak = max(self.task_peak, sample.task)

    def lines(self) -> list[str]:
        """The footer lines (generic-worker's wording and column; none when nothing was sampled)."""
        if self.count == 0:
            return []
        rows = [
            ("Average Available System Memory", format_memory(self.available_sum // self.count)),
            ("Average System Memory Used", format_memory(self.used_sum // self.count)),
            ("Peak System Memory Used", format_memory(self.used_peak)),
            ("Total System Memory", format_memory(self.total)),
        ]
        if self.task_count:
            rows += [
                ("Average Task Memory Used", format_memory(self.task_sum // self.task_count)),
                ("Peak Task Memory Used", format_memory(self.task_peak)),
            ]
        return [f"{label:>{LABEL_WIDTH}}: {value}" for label, value in rows]


class ResourceMonitorFeature(Feature):
    name = "resourceMonitor"

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        # The pool switch turns the monitor off rather than refusing every task (it is requested
        # by default, as liveLog); docker-worker payloads have no toggle and get it like D2G's.
        if not run.config.enableResourceMonitor:
            return None
        if run.payload_kind == "generic" and not payload_feature_flag(run.payload, "resourceMonitor", True):
            return None
        config = run.config
        thresholds = Thresholds(
            max_used_percent=int(config.maxMemoryUsagePercent),
            min_available_bytes=int(config.minAvailableMemoryBytes),
            allowed_seconds=int(config.allowedHighMemoryDurationSecs),
            warn_only=bool(config.disableOOMProtection),
        )
        return ResourceMonitorTaskFeature(run, thresholds)


class ResourceMonitorTaskFeature(TaskFeature):
    """Samples around each command of one run (a ``CommandWatcher``)."""

    def __init__(self, run: RunHandle, thresholds: Thresholds) -> None:
        self.run = run
        self.thresholds = thresholds
        self._sampler: asyncio.Task[None] | None = None
        self._usage = CommandUsage()

    async def start(self) -> None:
        self.run.command_watchers.append(self)

    async def stop(self, outcome: RunOutcome) -> None:
        await self._stop_sampler()

    # ---- CommandWatcher ----------------------------------------------------------------------
    def command_started(self) -> None:
        self._usage = CommandUsage()
        self._sampler = asyncio.create_task(self._sample_loop(self._usage))

    async def command_finished(self) -> list[str]:
        await self._stop_sampler()
        return self._usage.lines()

    # ---- sampling ----------------------------------------------------------------------------
    async def _stop_sampler(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler

    def _measure(self) -> Sample:
        """One sample (blocking: /proc/meminfo and a cgroup file, a /proc scan without one, or
        a Docker API call for containers)."""
        vm = _host_memory()
        try:
            task = self.run.sandbox.memory_usage_bytes()
        except Exception:  # a broken figure must never stop the task
            log.exception("memory_usage_bytes failed")
            task = None
        return Sample(
            total=int(vm.total),
            used=int(vm.used),
            available=int(vm.available),
            used_percent=float(vm.percent),
            task=task,
        )

    async def _sample_loop(self, usage: CommandUsage) -> None:
        """Sample now and every 0.5 s until cancelled; abort on sustained high memory."""
        high_since: float | None = None
        warned = False
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        inline = self.run.sandbox.memory_usage_is_cheap()  # ~0.07 ms: less than a thread trip
        while True:
            sample = self._measure() if inline else await asyncio.to_thread(self._measure)
            usage.add(sample)
            if self.thresholds.exceeded(sample.used_percent, sample.available):
                now = time.monotonic()
                high_since = now if high_since is None else high_since
                if now - high_since > self.thresholds.allowed_seconds and not warned:
                    warned = True
                    if self._high_memory():
                        return
            else:
                high_since, warned = None, False
            next_at += SAMPLE_INTERVAL
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _high_memory(self) -> bool:
        """Warn (generic-worker's line) and abort unless OOM protection is off; True = aborted."""
        t = self.thresholds
        self.run.log.warn(f"Memory usage {t.describe()} persisted for over {go_duration(t.allowed_seconds)}!")
        if t.warn_only:
            self.run.log.warn("OOM protections are disabled, continuing task...")
            return False
        self.run.log.warn(
            f"Aborting task: maxMemoryUsagePercent={t.max_used_percent}, "
            f"minAvailableMemoryBytes={t.min_available_bytes}, "
            f"allowedHighMemoryDurationSecs={t.allowed_seconds}"
        )
        self.run.abort(CancelReason.HIGH_MEMORY, f"task aborted due to sustained memory usage {t.describe()}")
        return True
