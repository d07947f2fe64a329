"""Prometheus metrics of the platform, served at ``GET /metrics`` by ``tcworker queue serve``.

Each app owns one :class:`PlatformMetrics` with its own ``CollectorRegistry`` (never the
process-global default registry), so two platforms in one process — tests, ``tcworker local`` —
never mix their figures. Requests are labelled with the API method's name (``createTask``), not
the raw path, so the label set stays small whatever task ids or artifact names are requested. The
per-request cost is two dictionary lookups and two prometheus-client updates on cached children
(a few microseconds); pending-task counts cost nothing per request: they are read from the
database once per scrape, over the ``tasks_pending`` index.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: Seconds. Platform calls take about a millisecond; claimWork long-polls for up to 20 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PENDING_NAME = "tcworker_platform_pending_tasks"


class PendingTasksCollector(Collector):
    """Pending tasks per task queue, from the snapshot taken just before each scrape."""

    def __init__(self) -> None:
        self.snapshot: Mapping[str, int] = {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(PENDING_NAME, "Tasks pending in each task queue", labels=["task_queue_id"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(PENDING_NAME, "Tasks pending in each task queue", labels=["task_queue_id"])
        for queue_id, count in sorted(self.snapshot.items()):
            family.add_metric([queue_id], count)
        yield family


class PlatformMetrics:
    """Request latency and counts by endpoint, pending tasks per queue; ``render()`` is the scrape."""

    def __init__(self, pending_by_queue: Callable[[], Awaitable[Mapping[str, int]]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._latency = Histogram(
            "tcworker_platform_request_duration_seconds",
            "Time from receiving a request to having its answer, by API method",
            ["service", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "tcworker_platform_requests",
            "Requests answered, by API method and HTTP status",
            ["service", "endpoint", "status"],
            registry=self.registry,
        )
        self._pending = PendingTasksCollector()
        self.registry.register(self._pending)
        self._pending_by_queue = pending_by_queue
        # labels() costs as much as the update itself: keep the children per label set.
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._count_children: dict[tuple[str, str, int], Any] = {}

    def observe(self, service: str, endpoint: str, status: int, seconds: float) -> None:
        """Record one answered request (called once per request, on the event loop)."""
        key = (service, endpoint)
        latency = self._latency_children.get(key)
        if latency is None:
            latency = self._latency_children[key] = self._latency.labels(service, endpoint)
        latency.observe(seconds)
        count_key = (service, endpoint, status)
        count = self._count_children.get(count_key)
        if count is None:
            count = self._count_children[count_key] = self._requests.labels(service, endpoint, str(status))
        count.inc()

    async def render(self) -> bytes:
        """The Prometheus text exposition, with pending counts read from the store now."""
        self._pending.snapshot = await self._pending_by_queue()
        return generate_latest(self.registry)
