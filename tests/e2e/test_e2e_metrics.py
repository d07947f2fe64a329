"""End to end: the worker's /metrics and /health on `metricsListenAddress` (issue 14).

A real worker process runs a few tasks; /metrics is scraped over HTTP and parsed with
prometheus-client's own text parser, and the counters must hold the numbers of what happened.
/health must answer 200 while the worker claims and 503 while it drains after SIGINT.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
import requests
from helpers.submitter import Submitter
from helpers.taskprocs import wait_for_marked
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{base}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _wait_health(base: str, status: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = requests.get(f"{base}/health", timeout=5).status_code
        except requests.ConnectionError:
            got = -1
        if got == status:
            return got
        time.sleep(0.05)
    return got


def test_metrics_count_tasks_and_health_flips_during_shutdown(submitter: Submitter, start_worker) -> None:
    port = _free_port()
    worker = start_worker(metricsListenAddress=str(port))  # port alone: 127.0.0.1
    base = f"http://127.0.0.1:{port}"
    assert _wait_health(base, 200, 30) == 200, worker.tail()

    ok = [submitter.create({"command": [["echo", f"ok-{i}"]], "maxRunTime": 60}) for i in range(2)]
    bad = submitter.create({"command": [["sh", "-c", "exit 3"]], "maxRunTime": 60})
    for task_id in ok:
        assert submitter.wait_run(task_id, timeout=60, worker=worker)["state"] == "completed"
    assert submitter.wait_run(bad, timeout=60, worker=worker)["state"] == "failed"

    deadline = time.monotonic() + 10  # the counters move after the report
    while True:
        s = _samples(base)
        if s.get(("tcworker_tasks_resolved_total", (("reason", ""), ("state", "failed")))) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.1)
    assert s[("tcworker_tasks_claimed_total", ())] == 3
    assert s[("tcworker_tasks_resolved_total", (("reason", ""), ("state", "completed")))] == 2
    assert s[("tcworker_tasks_resolved_total", (("reason", ""), ("state", "failed")))] == 1
    assert s[("tcworker_task_duration_seconds_count", ())] == 3
    assert s[("tcworker_task_duration_seconds_sum", ())] > 0
    assert s[("tcworker_queue_errors_total", ())] == 0
    assert s[("tcworker_reclaim_failures_total", ())] == 0
    assert s[("tcworker_task_claim_to_start_seconds_count", ())] == 3
    # Every byte the object service holds for these runs (object artifacts, as stored) was counted.
    stored = 0
    for task_id in [*ok, bad]:
        for name, art in submitter.artifacts(task_id, 0).items():
            if art["storageType"] == "object":
                stored += len(submitter.raw_artifact(task_id, 0, name)[1])
    assert stored > 0
    assert s[("tcworker_upload_bytes_total", ())] == stored
    assert 0 < s[("tcworker_upload_seconds_total", ())] < 60
    assert s[("tcworker_capacity", ())] == 1
    assert s[("tcworker_disk_free_bytes", ())] > 0

    # While a task runs: running 1, capacity fully in use.
    sleeper = submitter.create({"command": [["sleep", "4"]], "maxRunTime": 60})
    submitter.wait_running(sleeper, worker=worker)
    assert wait_for_marked(submitter.mark, present=True, timeout=30)
    s = _samples(base)
    assert s[("tcworker_tasks_running", ())] == 1
    assert s[("tcworker_capacity_in_use_ratio", ())] == 1.0
    assert _wait_health(base, 200, 5) == 200

    worker.send(signal.SIGINT)  # drain: the sleep finishes, no more claims
    assert _wait_health(base, 503, 3) == 503, "health must say 503 while the worker shuts down"
    assert requests.get(f"{base}/health", timeout=5).text.strip() == "shutting down"
    assert worker.wait(60) == 71
    assert submitter.wait_run(sleeper, timeout=10)["state"] == "completed"


def test_metrics_count_a_reclaim_failure(submitter: Submitter, start_worker) -> None:
    port = _free_port()
    # Status poll off: the cancel is seen by the reclaim (409), which the counter must show.
    worker = start_worker(
        metricsListenAddress=f"127.0.0.1:{port}", statusPollIntervalSecs=0, reclaimIntervalSecs=1
    )
    base = f"http://127.0.0.1:{port}"
    task_id = submitter.create({"command": [["sleep", "600"]], "maxRunTime": 900})
    submitter.wait_running(task_id, worker=worker)
    assert wait_for_marked(submitter.mark, present=True, timeout=30)
    submitter.queue.cancelTask(task_id)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _samples(base).get(("tcworker_reclaim_failures_total", ())):
        time.sleep(0.1)
    s = _samples(base)
    assert s[("tcworker_reclaim_failures_total", ())] == 1
    assert s[("tcworker_tasks_resolved_total", (("reason", "canceled"), ("state", "resolved-by-queue")))] == 1
