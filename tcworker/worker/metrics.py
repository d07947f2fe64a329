"""The worker's own ``/metrics`` (Prometheus text format) and ``/health``, on ``metricsListenAddress``.

Operators should see a worker's load and health without reading its log (issue 14). One
:class:`WorkerMetrics` per worker process with its own ``CollectorRegistry`` (never the global
default registry, as the platform's metrics), fed by the ``WorkerLoop`` at the few points where
something happens (claim, resolution, claimWork failure); the gauges (running tasks, capacity in
use, free disk) are read at scrape time, so they cost nothing between scrapes. ``/health`` answers
200 while the worker claims and 503 once it is shutting down (SIGTERM / SIGINT drain) or when the
queue has not answered a claimWork for ``STALE_AFTER`` seconds.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Seconds without a successful claimWork after which /health says 503 (claimWork long-polls ≤ 20 s).
STALE_AFTER = 120.0
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
DEFAULT_HOST = "127.0.0.1"


class _LoadCollector(Collector):
    """Running tasks, capacity in use and free disk, read when scraped."""

    def __init__(self, running: Callable[[], int], capacity: int, tasks_dir: Path) -> None:
        self._running = running
        self._capacity = capacity
        self._tasks_dir = tasks_dir

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = self._running()
        yield GaugeMetricFamily(
            "tcworker_tasks_running", "Task runs this worker is running now", value=running
        )
        yield GaugeMetricFamily(
            "tcworker_capacity_in_use_ratio",
            "Running task runs / capacity",
            value=running / max(1, self._capacity),
        )
        yield GaugeMetricFamily("tcworker_capacity", "Configured capacity", value=self._capacity)
        try:
            free = shutil.disk_usage(self._tasks_dir).free
        except OSError:
            return
        yield GaugeMetricFamily(
            "tcworker_disk_free_bytes", "Free bytes on the tasks directory's disk", value=free
        )


class WorkerMetrics:
    """Counters of one worker process; ``app()`` serves them and the health check."""

    def __init__(self, running: Callable[[], int], capacity: int, tasks_dir: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.claimed = Counter("tcworker_tasks_claimed", "Task runs claimed", registry=self.registry)
        self.resolved = Counter(
            "tcworker_tasks_resolved",
            "Task runs ended, by resolution (state/reason)",
            ["state", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "tcworker_task_duration_seconds",
            "Claim to end of a task run",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.claim_to_start = Histogram(
            "tcworker_task_claim_to_start_seconds",
            "Claim to the run's sandbox being ready (admission, image, user, task dir); commands start next",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "tcworker_upload_bytes",
            "Artifact and log bytes sent to the object service",
            registry=self.registry,
        )
        self.upload_seconds = Counter(
            "tcworker_upload_seconds",
            "Wall time spent uploading artifacts and logs (createArtifact to finishArtifact)",
            registry=self.registry,
        )
        self.reclaim_failures = Counter(
            "tcworker_reclaim_failures", "reclaimTask calls that failed (claim lost)", registry=self.registry
        )
        self.queue_errors = Counter(
            "tcworker_queue_errors",
            "claimWork calls that failed after the client's retries",
            registry=self.registry,
        )
        self.registry.register(_LoadCollector(running, capacity, tasks_dir))
        self.stopping = False
        self.last_queue_contact = time.monotonic()

    # ---- hooks of the worker loop ------------------------------------------------------------
    def queue_reached(self) -> None:
        self.last_queue_contact = time.monotonic()

    def run_ended(
        self,
        resolution: tuple[str, str | None],
        seconds: float,
        *,
        to_start: float | None = None,
        uploaded_bytes: int = 0,
        upload_seconds: float = 0.0,
        reclaim_failures: int = 0,
    ) -> None:
        state, reason = resolution
        self.resolved.labels(state, reason or "").inc()
        self.duration.observe(seconds)
        if to_start is not None:
            self.claim_to_start.observe(to_start)
        self.upload_bytes.inc(uploaded_bytes)
        self.upload_seconds.inc(upload_seconds)
        self.reclaim_failures.inc(reclaim_failures)

    # ---- HTTP --------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        silent = time.monotonic() - self.last_queue_contact
        if silent > STALE_AFTER:
            return False, f"queue not reached for {silent:.0f}s"
        return True, "claiming"

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _request: web.Request) -> web.Response:
        ok, why = self.healthy()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        return app


def parse_listen_address(address: str) -> tuple[str, int]:
    """``"host:port"``, or ``"port"`` alone for 127.0.0.1 (never all interfaces unless asked)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, address
    host = host.strip("[]") or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"metricsListenAddress {address!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"metricsListenAddress {address!r}: port out of range")
    return host, number


async def serve(metrics: WorkerMetrics, address: str) -> web.AppRunner:
    """Start the endpoint; the caller cleans up the returned runner."""
    host, port = parse_listen_address(address)
    runner = web.AppRunner(metrics.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("worker metrics at http://%s:%d/metrics, health at /health", host, port)
    return runner
