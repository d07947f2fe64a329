"""Prometheus metrics of the platform, served at ``GET /metrics`` by ``tcworker queue serve``.

Each app owns one :class:`PlatformMetrics` with its own ``CollectorRegistry`` (never the
process-global default registry), so two platforms in one process — tests, ``tcworker local`` —
never mix their figures. Requests are labelled with the API method's name (``createTask``), not
the raw path, so the label set stays small whatever task ids or artifact names are requested. The
per-request cost is one bisect and a few integer additions in plain dictionaries
(:class:`RequestCollector`, ~1 us; prometheus-client's own Histogram and Counter take a lock per
update and cost ~10x that, a measurable share of a platform call), turned into the same Prometheus
families at scrape time; pending-task counts cost nothing per request: they are read from the
database once per scrape, over the ``tasks_pending`` index.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: Seconds. Platform calls take about a millisecond; claimWork long-polls for up to 20 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PENDING_NAME = "tcworker_platform_pending_tasks"
LATENCY_NAME = "tcworker_platform_request_duration_seconds"
LATENCY_HELP = "Time from receiving a request to having its answer, by API method"
REQUESTS_NAME = "tcworker_platform_requests"
REQUESTS_HELP = "Requests answered, by API method and HTTP status"
_LE = (*(floatToGoString(b) for b in LATENCY_BUCKETS), "+Inf")


class LatencySeries:
    """One (service, endpoint) histogram: a count per bucket (not yet cumulative), sum, creation."""

    __slots__ = ("buckets", "total", "created")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0
        self.created = time.time()


class RequestCollector(Collector):
    """Request latency (histogram) and count (counter) by API method, kept in plain dictionaries.

    Only the event loop's thread calls ``observe`` and (through ``render``) ``collect``, so no
    lock is taken. ``collect`` yields what prometheus-client's labelled ``Histogram`` and
    ``Counter`` would: ``_bucket`` (cumulative, ``le`` as Go prints floats), ``_count``, ``_sum``,
    ``_created``; ``_total`` and ``_created``.
    """

    def __init__(self) -> None:
        self._latency: dict[tuple[str, str], LatencySeries] = {}
        self._counts: dict[tuple[str, str, int], list[float]] = {}  # [count, created]

    def observe(self, service: str, endpoint: str, status: int, seconds: float) -> None:
        series = self._latency.get((service, endpoint))
        if series is None:
            series = self._latency[(service, endpoint)] = LatencySeries()
        series.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series.total += seconds
        count = self._counts.get((service, endpoint, status))
        if count is None:
            count = self._counts[(service, endpoint, status)] = [0, time.time()]
        count[0] += 1

    def describe(self) -> Iterator[Metric]:
        yield Metric(LATENCY_NAME, LATENCY_HELP, "histogram")
        yield Metric(REQUESTS_NAME, REQUESTS_HELP, "counter")

    def collect(self) -> Iterator[Metric]:
        latency = Metric(LATENCY_NAME, LATENCY_HELP, "histogram")
        for (service, endpoint), series in self._latency.items():
            labels = {"service": service, "endpoint": endpoint}
            cumulative = 0
            for le, count in zip(_LE, series.buckets, strict=True):
                cumulative += count
                latency.add_sample(f"{LATENCY_NAME}_bucket", {**labels, "le": le}, float(cumulative))
            latency.add_sample(f"{LATENCY_NAME}_count", labels, float(cumulative))
            latency.add_sample(f"{LATENCY_NAME}_sum", labels, series.total)
            latency.add_sample(f"{LATENCY_NAME}_created", labels, series.created)
        yield latency
        requests = Metric(REQUESTS_NAME, REQUESTS_HELP, "counter")
        for (service, endpoint, status), (count, created) in self._counts.items():
            labels = {"service": service, "endpoint": endpoint, "status": str(status)}
            requests.add_sample(f"{REQUESTS_NAME}_total", labels, float(count))
            requests.add_sample(f"{REQUESTS_NAME}_created", labels, created)
        yield requests


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
        self._requests = RequestCollector()
        self.registry.register(self._requests)
        self._pending = PendingTasksCollector()
        self.registry.register(self._pending)
        self._pending_by_queue = pending_by_queue

    def observe(self, service: str, endpoint: str, status: int, seconds: float) -> None:
        """Record one answered request (called once per request, on the event loop)."""
        self._requests.observe(service, endpoint, status, seconds)

    async def render(self) -> bytes:
        """The Prometheus text exposition, with pending counts read from the store now."""
        self._pending.snapshot = await self._pending_by_queue()
        return generate_latest(self.registry)
