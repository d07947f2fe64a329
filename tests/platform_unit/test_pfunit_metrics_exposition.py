"""The platform's request metrics expose exactly what prometheus-client's Histogram/Counter would.

``RequestCollector`` keeps counts in plain dictionaries (no lock per update) and builds the
families at scrape time; the reference is a labelled ``Histogram`` and ``Counter`` fed the same
observations, compared on the whole text exposition (only the ``_created`` timestamps differ).
"""

from __future__ import annotations

import random
import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tcworker.platform.metrics import (
    LATENCY_BUCKETS,
    LATENCY_HELP,
    LATENCY_NAME,
    REQUESTS_HELP,
    REQUESTS_NAME,
    RequestCollector,
)

_CREATED_VALUE = re.compile(rb"(_created\{[^}]*\}) \S+")


def _observations() -> list[tuple[str, str, int, float]]:
    rng = random.Random(15)
    calls = [
        ("queue", "createTask"),
        ("queue", "claimWork"),
        ("object", "createUpload"),
        ("none", "unmatched"),
    ]
    out = [(s, e, rng.choice((200, 200, 404, 500)), rng.choice((0.0001, 0.003, 0.2, 40.0))) for s, e in calls]
    out += [(*rng.choice(calls), 200, rng.expovariate(300)) for _ in range(500)]
    out += [("queue", "claimWork", 200, b) for b in LATENCY_BUCKETS]  # exactly on each bound
    return out


def test_exposition_matches_prometheus_client() -> None:
    ours = CollectorRegistry(auto_describe=True)
    collector = RequestCollector()
    ours.register(collector)
    reference = CollectorRegistry(auto_describe=True)
    latency = Histogram(
        LATENCY_NAME, LATENCY_HELP, ["service", "endpoint"], buckets=LATENCY_BUCKETS, registry=reference
    )
    requests = Counter(REQUESTS_NAME, REQUESTS_HELP, ["service", "endpoint", "status"], registry=reference)
    for service, endpoint, status, seconds in _observations():
        collector.observe(service, endpoint, status, seconds)
        latency.labels(service, endpoint).observe(seconds)
        requests.labels(service, endpoint, str(status)).inc()
    mine, theirs = generate_latest(ours), generate_latest(reference)
    assert b"_created{" in mine
    assert _CREATED_VALUE.sub(rb"\1 T", mine) == _CREATED_VALUE.sub(rb"\1 T", theirs)
