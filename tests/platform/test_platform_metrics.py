"""Issue 14: ``GET /metrics`` on the platform, scraped with prometheus-client's own parser.

Request counts by API method and status, the latency histogram by API method (never by raw path:
no task id may appear in a label) and the pending-task gauge per task queue, computed at scrape
time. The session server is shared, so counters are compared as deltas between two scrapes.
"""

from __future__ import annotations

import os

import pytest
import requests
import slugid
import taskcluster
from helpers.platformapi import claim, create_task, rest_error, upload_artifact
from helpers.platformproc import PlatformProcess
from helpers.tasks import new_queue_id, task_def
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(platform: PlatformProcess) -> Samples:
    answer = requests.get(f"{platform.root_url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST, answer.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


REQUESTS = "tcworker_platform_requests_total"
LATENCY = "tcworker_platform_request_duration_seconds"
PENDING = "tcworker_platform_pending_tasks"


def test_metrics_count_requests_by_method_and_pending_tasks_per_queue(pserver: PlatformProcess) -> None:
    queue = pserver.queue(maxRetries=0)
    queue_id = new_queue_id()
    other_queue = new_queue_id()
    before = scrape(pserver)

    task_ids = [create_task(queue, queue_id)[0] for _ in range(3)]
    create_task(queue, other_queue)
    bad_id = slugid.nice()
    try:
        queue.createTask(bad_id, {"taskQueueId": queue_id})
    except taskcluster.TaskclusterRestFailure as e:
        assert e.status_code == 400
    else:
        raise AssertionError("an invalid createTask body was accepted")
    for _ in range(2):
        try:
            queue.status(slugid.nice())
        except taskcluster.TaskclusterRestFailure as e:
            assert e.status_code == 404
        else:
            raise AssertionError("status of an unknown task answered 200")
    assert queue.pendingTasks(queue_id)["pendingTasks"] == 3

    after = scrape(pserver)
    q = {"service": "queue"}
    assert delta(before, after, REQUESTS, **q, endpoint="createTask", status="200") == 4
    assert delta(before, after, REQUESTS, **q, endpoint="createTask", status="400") == 1
    assert delta(before, after, REQUESTS, **q, endpoint="status", status="404") == 2
    assert delta(before, after, REQUESTS, **q, endpoint="pendingTasks", status="200") == 1
    assert delta(before, after, f"{LATENCY}_count", **q, endpoint="createTask") == 5
    assert delta(before, after, f"{LATENCY}_sum", **q, endpoint="createTask") > 0
    assert delta(before, after, f"{LATENCY}_bucket", **q, endpoint="createTask", le="+Inf") == 5
    assert delta(before, after, f"{LATENCY}_bucket", **q, endpoint="createTask", le="30.0") == 5
    assert value(after, PENDING, task_queue_id=queue_id) == 3
    assert value(after, PENDING, task_queue_id=other_queue) == 1
    labels = {v for (_, pairs) in after for (_, v) in pairs}
    assert not any(t in label for t in [*task_ids, bad_id] for label in labels), "a task id became a label"

    # The gauge is computed at scrape time: claiming and resolving tasks lowers it.
    claims = claim(queue, queue_id, tasks=2)
    assert len(claims) == 2
    assert value(scrape(pserver), PENDING, task_queue_id=queue_id) == 1
    running = claims[0]
    task_id = running["status"]["taskId"]
    upload_artifact(pserver, running["credentials"], task_id, 0, "public/m.bin", os.urandom(20000))
    for c in claims:
        pserver.queue(c["credentials"], maxRetries=0).reportCompleted(c["status"]["taskId"], 0)
    rest = claim(queue, queue_id, tasks=5)
    assert len(rest) == 1
    final = scrape(pserver)
    assert value(final, PENDING, task_queue_id=queue_id) == 0
    assert delta(after, final, REQUESTS, **q, endpoint="reportCompleted", status="200") == 2
    assert delta(after, final, REQUESTS, **q, endpoint="claimWork", status="200") == 2
    assert delta(after, final, REQUESTS, service="object", endpoint="createUpload", status="200") == 1
    assert delta(after, final, REQUESTS, service="object-data", endpoint="putData", status="200") == 1
    assert delta(after, final, REQUESTS, service="none", endpoint="metrics", status="200") == 2


def test_metrics_count_refused_and_unknown_requests(pserver: PlatformProcess) -> None:
    before = scrape(pserver)
    anonymous = pserver.queue(None, maxRetries=0)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anonymous.createTask(slugid.nice(), task_def(new_queue_id()))
    rest_error(exc, 403, "InsufficientScopes")
    assert requests.get(f"{pserver.root_url}/api/nothing/v1/here", timeout=30).status_code == 404
    after = scrape(pserver)
    assert delta(before, after, REQUESTS, service="none", endpoint="unmatched", status="404") == 1
    assert delta(before, after, REQUESTS, service="queue", endpoint="createTask", status="403") == 1
