"""The run state machine as one table (spec §2.4), applied to a :class:`TaskRecord`.

Pure code: no I/O and no clock reads, so every transition is unit-testable. ``apply`` returns
what happened (``Outcome``) so the caller knows whether the task reached a final resolution
(dependents may become schedulable) and whether a new pending run appeared (wake a claimWork).
"""

from __future__ import annotations

from dataclasses import dataclass

from tcworker.platform.clock import json_ms
from tcworker.platform.errors import RequestConflict
from tcworker.platform.store.models import TaskRecord

#: (state of the task, event) → state of the run the event acts on afterwards.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("unscheduled", "schedule"): "pending",
    ("unscheduled", "cancel"): "exception",
    ("unscheduled", "deadline"): "exception",
    ("pending", "claim"): "running",
    ("pending", "cancel"): "exception",
    ("pending", "deadline"): "exception",
    ("running", "reclaim"): "running",
    ("running", "completed"): "completed",
    ("running", "failed"): "failed",
    ("running", "exception"): "exception",
    ("running", "claim-expired"): "exception",
    ("running", "cancel"): "exception",
    ("running", "deadline"): "exception",
    ("completed", "rerun"): "pending",
    ("failed", "rerun"): "pending",
    ("exception", "rerun"): "pending",
}

#: Resolution reasons that add a retry run while retriesLeft > 0, and that run's reasonCreated.
RETRY_REASON_CREATED: dict[str, str] = {
    "worker-shutdown": "retry",
    "intermittent-task": "task-retry",
    "claim-expired": "retry",
}

#: reasonResolved written by each event (``exception`` takes the reported reason).
EVENT_REASON: dict[str, str] = {
    "completed": "completed",
    "failed": "failed",
    "claim-expired": "claim-expired",
    "cancel": "canceled",
    "deadline": "deadline-exceeded",
}

MAX_RUNS = 50
RESOLVED = frozenset({"completed", "failed", "exception"})


@dataclass
class Outcome:
    """What a transition did: a new pending run? did the task reach a final resolution?"""

    new_pending: bool = False
    resolved: bool = False


def allowed(state: str, event: str) -> bool:
    return (state, event) in TRANSITIONS


def apply(
    task: TaskRecord,
    event: str,
    now_ms: int,
    *,
    reason: str | None = None,
    worker: tuple[str, str] | None = None,
    taken_until_ms: int | None = None,
) -> Outcome:
    """Apply ``event`` to ``task`` in place; raise 409 when the table has no such transition."""
    state = task.state
    if (state, event) not in TRANSITIONS:
        raise RequestConflict(f"Task {task.task_id} is `{state}`: cannot {event}")
    now = json_ms(now_ms)
    runs = task.runs
    outcome = Outcome()
    if state == "unscheduled" and event == "schedule":
        runs.append(_new_run(0, "scheduled", now))
        outcome.new_pending = True
    elif state == "unscheduled":
        run = _new_run(0, "exception", now)
        run.update(state="exception", reasonResolved=EVENT_REASON[event], resolved=now)
        runs.append(run)
        outcome.resolved = True
    elif event == "claim":
        assert worker is not None and taken_until_ms is not None
        runs[-1].update(
            state="running",
            workerGroup=worker[0],
            workerId=worker[1],
            takenUntil=json_ms(taken_until_ms),
            started=now,
        )
    elif event == "reclaim":
        assert taken_until_ms is not None
        runs[-1]["takenUntil"] = json_ms(taken_until_ms)
    elif event == "rerun":
        if len(runs) >= MAX_RUNS:
            raise RequestConflict(f"Task {task.task_id} already has {MAX_RUNS} runs")
        task.retries_left = max(0, min(task.retries, MAX_RUNS - 2 - (len(runs) - 1)))
        runs.append(_new_run(len(runs), "rerun", now))
        outcome.new_pending = True
    else:
        final = EVENT_REASON.get(event) if event != "exception" else reason
        assert final is not None
        run = runs[-1]
        run.update(state=TRANSITIONS[(state, event)], reasonResolved=final, resolved=now)
        retry_as = RETRY_REASON_CREATED.get(final)
        if (
            retry_as is not None
            and task.retries_left > 0
            and now_ms < task.deadline_ms
            and len(runs) < MAX_RUNS
        ):
            task.retries_left -= 1
            runs.append(_new_run(len(runs), retry_as, now))
            outcome.new_pending = True
        else:
            outcome.resolved = True
    task.refresh(taken_until_ms if event in ("claim", "reclaim") else None)
    return outcome


def _new_run(run_id: int, reason_created: str, now: str) -> dict[str, object]:
    return {"runId": run_id, "state": "pending", "reasonCreated": reason_created, "scheduled": now}
