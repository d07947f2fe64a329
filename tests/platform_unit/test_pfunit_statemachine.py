"""The run state machine table (spec §2.4), driven directly on TaskRecords."""

from __future__ import annotations

import pytest

from tcworker.platform.errors import RequestConflict
from tcworker.platform.queue import statemachine
from tcworker.platform.store.models import TaskRecord

NOW = 1_700_000_000_000
DEADLINE = NOW + 3600_000


def _task(retries: int = 2) -> TaskRecord:
    return TaskRecord("tid", {"taskQueueId": "p/w"}, retries, retries, DEADLINE, DEADLINE + 1)


def _running(task: TaskRecord) -> TaskRecord:
    if task.state == "unscheduled":
        statemachine.apply(task, "schedule", NOW)
    statemachine.apply(task, "claim", NOW, worker=("wg", "wi"), taken_until_ms=NOW + 1000)
    return task


def test_schedule_claim_reclaim_complete() -> None:
    task = _running(_task())
    assert task.state == "running" and task.taken_until_ms == NOW + 1000
    assert task.runs[0]["workerGroup"] == "wg" and "takenUntil" in task.runs[0]
    statemachine.apply(task, "reclaim", NOW, taken_until_ms=NOW + 5000)
    assert task.taken_until_ms == NOW + 5000
    out = statemachine.apply(task, "completed", NOW)
    assert out.resolved and not out.new_pending
    assert task.runs[0]["reasonResolved"] == "completed" and task.taken_until_ms is None


@pytest.mark.parametrize(
    ("reason", "created"), [("worker-shutdown", "retry"), ("intermittent-task", "task-retry")]
)
def test_retried_exceptions_add_a_pending_run(reason: str, created: str) -> None:
    task = _running(_task())
    out = statemachine.apply(task, "exception", NOW, reason=reason)
    assert out.new_pending and not out.resolved
    assert task.state == "pending" and task.retries_left == 1
    assert task.runs[1]["reasonCreated"] == created and task.runs[0]["state"] == "exception"


@pytest.mark.parametrize(
    "reason", ["malformed-payload", "resource-unavailable", "internal-error", "superseded"]
)
def test_other_exceptions_are_final(reason: str) -> None:
    task = _running(_task())
    out = statemachine.apply(task, "exception", NOW, reason=reason)
    assert out.resolved and task.state == "exception" and len(task.runs) == 1


def test_claim_expired_retries_until_retries_run_out() -> None:
    task = _task(retries=1)
    _running(task)
    assert statemachine.apply(task, "claim-expired", NOW).new_pending
    _running(task)
    out = statemachine.apply(task, "claim-expired", NOW)
    assert out.resolved and task.state == "exception" and task.retries_left == 0
    assert [r["reasonResolved"] for r in task.runs] == ["claim-expired", "claim-expired"]


def test_unscheduled_cancel_and_deadline_create_an_exception_run() -> None:
    for event, reason in (("cancel", "canceled"), ("deadline", "deadline-exceeded")):
        task = _task()
        out = statemachine.apply(task, event, NOW)
        assert out.resolved
        assert task.runs == [
            {
                "runId": 0,
                "state": "exception",
                "reasonCreated": "exception",
                "scheduled": task.runs[0]["scheduled"],
                "reasonResolved": reason,
                "resolved": task.runs[0]["resolved"],
            }
        ]


def test_rerun_resets_retries_and_is_capped_at_fifty_runs() -> None:
    task = _running(_task(retries=5))
    statemachine.apply(task, "failed", NOW)
    statemachine.apply(task, "rerun", NOW)
    assert task.state == "pending" and task.runs[-1]["reasonCreated"] == "rerun" and task.retries_left == 5
    while len(task.runs) < statemachine.MAX_RUNS:
        _running(task)
        statemachine.apply(task, "failed", NOW)
        statemachine.apply(task, "rerun", NOW)
    assert task.retries_left == 0  # min(retries, 48 - lastRunId)
    _running(task)
    statemachine.apply(task, "failed", NOW)
    with pytest.raises(RequestConflict):
        statemachine.apply(task, "rerun", NOW)


@pytest.mark.parametrize(
    ("state_events", "event"),
    [
        ([], "claim"),
        ([], "completed"),
        (["schedule"], "reclaim"),
        (["schedule"], "rerun"),
        (["schedule"], "failed"),
    ],
)
def test_transitions_missing_from_the_table_conflict(state_events: list[str], event: str) -> None:
    task = _task()
    for e in state_events:
        statemachine.apply(task, e, NOW)
    assert not statemachine.allowed(task.state, event)
    with pytest.raises(RequestConflict):
        statemachine.apply(task, event, NOW, worker=("a", "b"), taken_until_ms=NOW)


def test_no_retry_after_the_deadline() -> None:
    task = _running(_task())
    out = statemachine.apply(task, "exception", DEADLINE + 1, reason="worker-shutdown")
    assert out.resolved and len(task.runs) == 1
