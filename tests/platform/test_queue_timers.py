"""Acceptance (issue 2, item 1): what the queue does on its own when time passes.

Claim expiry (`--claim-timeout 3` → `exception/claim-expired` plus a retry run while retries
remain; reclaim keeps a claim alive) and deadlines (`deadline-exceeded` for pending, running and
unscheduled tasks, no retry, and 409 for reclaim/rerun/cancel afterwards).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import pytest
import slugid
import taskcluster
from helpers.platformapi import (
    check_schema,
    check_status,
    claim,
    claim_task,
    create_task,
    rest_error,
    run_queue,
    run_states,
)
from helpers.platformproc import PlatformProcess
from helpers.polling import wait_for
from helpers.tasks import from_now, new_queue_id, task_def

CLAIM_TIMEOUT = 3


@pytest.fixture(scope="module")
def short_claims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    proc = PlatformProcess(tmp_path_factory.mktemp("short-claims") / "data", claim_timeout=CLAIM_TIMEOUT)
    try:
        yield proc.start()
    finally:
        proc.stop()


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_claim_expiry_retry_and_reclaim_keeps_alive(short_claims: PlatformProcess) -> None:
    queue = short_claims.queue(maxRetries=0)
    q = new_queue_id()
    retried, _ = create_task(queue, q, retries=1, priority="highest")
    final, _ = create_task(queue, q, retries=0, priority="high")
    kept, _ = create_task(queue, q, retries=0, priority="low")
    claims = {c["status"]["taskId"]: c for c in claim(queue, q, tasks=3)}
    assert set(claims) == {retried, final, kept}
    for c in claims.values():
        span = _ts(c["takenUntil"]) - _ts(c["status"]["runs"][0]["started"])
        assert abs(span.total_seconds() - CLAIM_TIMEOUT) < 1.0, (
            f"takenUntil not started+{CLAIM_TIMEOUT}s: {span}"
        )

    keeper = claims[kept]
    start = time.monotonic()
    while time.monotonic() - start < CLAIM_TIMEOUT + 2.5:
        time.sleep(1.0)
        keeper = check_schema(run_queue(short_claims, keeper).reclaimTask(kept, 0), "task-reclaim-response")

    status = wait_for(
        lambda: (s := queue.status(retried)["status"])["runs"][0]["state"] == "exception" and s,
        timeout=10,
        what="claim-expired resolution",
    )
    check_status({"status": status})
    assert run_states(status) == [("exception", "scheduled", "claim-expired"), ("pending", "retry", None)]
    assert status["retriesLeft"] == 0
    stale = run_queue(short_claims, claims[retried])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        stale.reclaimTask(retried, 0)
    rest_error(exc, 409, "RequestConflict")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        stale.reportCompleted(retried, 0)
    rest_error(exc, 409, "RequestConflict")

    status = wait_for(
        lambda: (s := queue.status(final)["status"])["state"] == "exception" and s, 10, what="final expiry"
    )
    assert run_states(status) == [("exception", "scheduled", "claim-expired")]

    # the reclaimed one survived well past its first takenUntil
    assert check_status(queue.status(kept))["state"] == "running"
    assert check_status(run_queue(short_claims, keeper).reportCompleted(kept, 0))["state"] == "completed"

    # the retry run is handed out like any other
    c = claim_task(queue, q, retried, worker_id="w2")
    assert c["runId"] == 1
    assert check_status(run_queue(short_claims, c).reportCompleted(retried, 1))["state"] == "completed"


def test_deadline_exceeded(pserver: PlatformProcess, root_queue: taskcluster.Queue) -> None:
    q = new_queue_id()
    soon = from_now(seconds=2)
    pending, _ = create_task(root_queue, q, deadline=soon, priority="lowest")
    running, _ = create_task(root_queue, q, deadline=soon, priority="highest")
    blocker, _ = create_task(root_queue, new_queue_id())
    unscheduled, _ = create_task(root_queue, q, deadline=soon, dependencies=[blocker])
    c = claim_task(root_queue, q, running)
    began = time.monotonic()

    def resolved(task_id: str) -> dict | None:
        s = root_queue.status(task_id)["status"]
        return s if s["state"] == "exception" else None

    for task_id, created in ((pending, "scheduled"), (running, "scheduled"), (unscheduled, "exception")):
        status = wait_for(
            lambda t=task_id: resolved(t), timeout=75, poll=0.25, what=f"deadline of {task_id}"
        )
        check_status({"status": status})
        assert run_states(status) == [("exception", created, "deadline-exceeded")], task_id
    print(f"deadline acted {time.monotonic() - began:.1f}s after claim (deadline was ~2s ahead)")

    rq = run_queue(pserver, c)
    for call in (
        lambda: rq.reclaimTask(running, 0),
        lambda: root_queue.rerunTask(pending),
        lambda: root_queue.cancelTask(pending),
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            call()
        rest_error(exc, 409, "RequestConflict")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deadline", lambda: from_now(minutes=-20)),
        ("deadline", lambda: from_now(days=6)),
        ("created", lambda: from_now(hours=-2)),
        ("created", lambda: from_now(hours=2)),
    ],
)
def test_bad_times_rejected(root_queue: taskcluster.Queue, field: str, value: Callable[[], str]) -> None:
    body = task_def(new_queue_id(), **{field: value()})
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(slugid.nice(), body)
    rest_error(exc, 400)


def test_expires_before_deadline_rejected(root_queue: taskcluster.Queue) -> None:
    body = task_def(new_queue_id(), deadline=from_now(hours=2), expires=from_now(hours=1))
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(slugid.nice(), body)
    rest_error(exc, 400)
