"""Acceptance (issue 2, item 1): the run state machine, driven by the official client.

create → claimWork → reclaim → every resolution, retries, rerun, cancel, dependencies,
priorities/FIFO and the claimWork long-poll wake-up; every answer is checked against the
official response schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

import pytest
import slugid
import taskcluster
import taskcluster.aio
from helpers.platformapi import (
    EXCEPTION_REASONS,
    RETRIED_REASONS,
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
from helpers.tasks import new_queue_id, task_def


def test_create_defaults_and_task_definition(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, status = create_task(root_queue, queue_id)
    assert status["taskId"] == task_id
    assert status["state"] == "pending"
    assert status["taskQueueId"] == queue_id
    assert (status["provisionerId"], status["workerType"]) == tuple(queue_id.split("/"))
    assert status["schedulerId"] == "-" and status["projectId"] == "none"
    assert status["taskGroupId"] == task_id
    assert status["retriesLeft"] == 5
    assert run_states(status) == [("pending", "scheduled", None)]
    # optional keys are omitted, not null
    assert set(status["runs"][0]) == {"runId", "state", "reasonCreated", "scheduled"}

    task = check_schema(root_queue.task(task_id), "task")
    assert task["priority"] == "lowest" and task["retries"] == 5
    assert task["taskQueueId"] == queue_id
    assert task["provisionerId"] == queue_id.split("/")[0]
    assert task["dependencies"] == [] and task["requires"] == "all-completed"
    deadline = dt.datetime.fromisoformat(task["deadline"].replace("Z", "+00:00"))
    expires = dt.datetime.fromisoformat(task["expires"].replace("Z", "+00:00"))
    assert expires - deadline == dt.timedelta(days=365) or expires - deadline == dt.timedelta(days=366)
    assert check_status(root_queue.status(task_id)) == status


def test_create_is_idempotent_and_conflicts_on_change(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id = slugid.nice()
    body = task_def(queue_id)
    first = check_status(root_queue.createTask(task_id, body))
    again = check_status(root_queue.createTask(task_id, body))
    assert again == first
    changed = dict(body, payload={"different": True})
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(task_id, changed)
    rest_error(exc, 409, "RequestConflict")


def test_provisioner_worker_type_form(root_queue: taskcluster.Queue, queue_id: str) -> None:
    prov, wt = queue_id.split("/")
    body = task_def(queue_id)
    del body["taskQueueId"]
    body.update(provisionerId=prov, workerType=wt)
    task_id = slugid.nice()
    status = check_status(root_queue.createTask(task_id, body))
    assert status["taskQueueId"] == queue_id
    mismatch = dict(body, taskQueueId=f"{prov}/other-type")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(slugid.nice(), mismatch)
    rest_error(exc, 400)


def test_claim_reclaim_complete(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    task_id, _ = create_task(root_queue, queue_id, scopes=["tcw-test:some-scope"])
    c = claim_task(root_queue, queue_id, task_id)
    assert c["runId"] == 0 and c["workerGroup"] == "wg" and c["workerId"] == "w1"
    assert c["status"]["state"] == "running"
    run = c["status"]["runs"][0]
    assert run["workerGroup"] == "wg" and run["workerId"] == "w1"
    assert run["takenUntil"] == c["takenUntil"] and "started" in run
    assert c["task"] == root_queue.task(task_id)

    rq = run_queue(pserver, c)
    time.sleep(0.01)
    re1 = check_schema(rq.reclaimTask(task_id, 0), "task-reclaim-response")
    assert re1["takenUntil"] >= c["takenUntil"]
    assert re1["status"]["runs"][0]["takenUntil"] == re1["takenUntil"]
    assert re1["credentials"]["accessToken"] != c["credentials"]["accessToken"]

    rq2 = run_queue(pserver, re1)
    done = check_status(rq2.reportCompleted(task_id, 0))
    assert done["state"] == "completed"
    assert run_states(done) == [("completed", "scheduled", "completed")]
    assert {"resolved", "started", "workerGroup", "workerId", "takenUntil"} <= set(done["runs"][0])
    # repeating the same resolution is idempotent; a different one conflicts
    assert check_status(rq2.reportCompleted(task_id, 0))["state"] == "completed"
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq2.reportFailed(task_id, 0)
    rest_error(exc, 409, "RequestConflict")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq2.reclaimTask(task_id, 0)
    rest_error(exc, 409, "RequestConflict")


def test_report_failed(pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, task_id)
    status = check_status(run_queue(pserver, c).reportFailed(task_id, 0))
    assert run_states(status) == [("failed", "scheduled", "failed")]
    assert status["state"] == "failed"


def test_report_on_pending_run_conflicts(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, _ = create_task(root_queue, queue_id)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.reportCompleted(task_id, 0)
    rest_error(exc, 409, "RequestConflict")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.reportCompleted(task_id, 3)
    assert exc.value.status_code in (404, 409)


@pytest.mark.parametrize("reason", EXCEPTION_REASONS)
def test_report_exception(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str, reason: str
) -> None:
    task_id, _ = create_task(root_queue, queue_id, retries=2)
    c = claim_task(root_queue, queue_id, task_id)
    rq = run_queue(pserver, c)
    status = check_status(rq.reportException(task_id, 0, {"reason": reason}))
    assert status["runs"][0]["state"] == "exception"
    assert status["runs"][0]["reasonResolved"] == reason
    if reason in RETRIED_REASONS:
        assert run_states(status) == [
            ("exception", "scheduled", reason),
            ("pending", RETRIED_REASONS[reason], None),
        ]
        assert status["state"] == "pending" and status["retriesLeft"] == 1
        c2 = claim_task(root_queue, queue_id, task_id, worker_id="w2")
        assert c2["runId"] == 1
        status = check_status(run_queue(pserver, c2).reportCompleted(task_id, 1))
        assert status["state"] == "completed"
    else:
        assert run_states(status) == [("exception", "scheduled", reason)]
        assert status["state"] == "exception" and status["retriesLeft"] == 2
    # same reason again: idempotent; another resolution: 409
    again = check_status(rq.reportException(task_id, 0, {"reason": reason}))
    assert again["runs"][0]["reasonResolved"] == reason and len(again["runs"]) == len(status["runs"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.reportCompleted(task_id, 0)
    rest_error(exc, 409, "RequestConflict")


def test_retries_exhausted(pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, status = create_task(root_queue, queue_id, retries=1)
    assert status["retriesLeft"] == 1
    c = claim_task(root_queue, queue_id, task_id)
    status = check_status(run_queue(pserver, c).reportException(task_id, 0, {"reason": "worker-shutdown"}))
    assert status["retriesLeft"] == 0 and len(status["runs"]) == 2
    c = claim_task(root_queue, queue_id, task_id)
    status = check_status(run_queue(pserver, c).reportException(task_id, 1, {"reason": "intermittent-task"}))
    assert run_states(status) == [
        ("exception", "scheduled", "worker-shutdown"),
        ("exception", "retry", "intermittent-task"),
    ]
    assert status["state"] == "exception"


@pytest.mark.parametrize("reason", ["canceled", "claim-expired", "deadline-exceeded", "nope"])
def test_queue_only_reasons_rejected(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str, reason: str
) -> None:
    task_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, task_id)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        run_queue(pserver, c).reportException(task_id, 0, {"reason": reason})
    rest_error(exc, 400, "InputValidationError")
    assert check_status(root_queue.status(task_id))["state"] == "running"


def test_superseded_accepted_without_retry(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    """Deliberate deviation (lead's ruling, issue 5): the real v106 queue answers 400 for
    `superseded`; the local platform accepts it so superseded tasks can resolve as upstream
    docker-worker once did. It never retries."""
    task_id, _ = create_task(root_queue, queue_id, retries=3)
    c = claim_task(root_queue, queue_id, task_id)
    status = check_status(run_queue(pserver, c).reportException(task_id, 0, {"reason": "superseded"}))
    assert run_states(status) == [("exception", "scheduled", "superseded")]
    assert status["state"] == "exception" and status["retriesLeft"] == 3


def test_cancel_pending_running_unscheduled_resolved(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    pending_id, _ = create_task(root_queue, queue_id, priority="highest")
    status = check_status(root_queue.cancelTask(pending_id))
    assert run_states(status) == [("exception", "scheduled", "canceled")]

    running_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, running_id)  # the cancelled one is not handed out
    status = check_status(root_queue.cancelTask(running_id))
    assert run_states(status) == [("exception", "scheduled", "canceled")]
    rq = run_queue(pserver, c)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.reclaimTask(running_id, 0)
    rest_error(exc, 409, "RequestConflict")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        rq.reportCompleted(running_id, 0)
    rest_error(exc, 409, "RequestConflict")

    blocker_id, _ = create_task(root_queue, new_queue_id())
    unsched_id, status = create_task(root_queue, queue_id, dependencies=[blocker_id])
    assert status["state"] == "unscheduled" and status["runs"] == []
    status = check_status(root_queue.cancelTask(unsched_id))
    assert run_states(status) == [("exception", "exception", "canceled")]

    done_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, done_id)
    done = check_status(run_queue(pserver, c).reportCompleted(done_id, 0))
    assert check_status(root_queue.cancelTask(done_id)) == done


def test_rerun(pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, _ = create_task(root_queue, queue_id, retries=3)
    assert check_status(root_queue.rerunTask(task_id))["runs"][0]["state"] == "pending"  # no-op
    c = claim_task(root_queue, queue_id, task_id)
    check_status(run_queue(pserver, c).reportFailed(task_id, 0))
    status = check_status(root_queue.rerunTask(task_id))
    assert run_states(status) == [("failed", "scheduled", "failed"), ("pending", "rerun", None)]
    assert status["state"] == "pending" and status["retriesLeft"] == 3
    c = claim_task(root_queue, queue_id, task_id)
    assert c["runId"] == 1
    assert check_status(run_queue(pserver, c).reportCompleted(task_id, 1))["state"] == "completed"


def test_priority_then_fifo(root_queue: taskcluster.Queue, queue_id: str) -> None:
    order = ["low", "high", "low", "highest", "high", "lowest", "very-low", "lowest", "medium", "very-high"]
    created = [(create_task(root_queue, queue_id, priority=p)[0], p) for p in order]
    rank = ["highest", "very-high", "high", "medium", "low", "very-low", "lowest"]
    expected = [tid for tid, _ in sorted(created, key=lambda tp: rank.index(tp[1]))]  # stable sort = FIFO
    got: list[str] = []
    for _ in created:
        claims = claim(root_queue, queue_id, tasks=1)
        assert len(claims) == 1
        got.append(claims[0]["status"]["taskId"])
    assert got == expected


def test_claim_work_hands_several_and_pending_count(root_queue: taskcluster.Queue, queue_id: str) -> None:
    ids = {create_task(root_queue, queue_id)[0] for _ in range(5)}
    counts = check_schema(root_queue.pendingTasks(queue_id), "pending-tasks-response")
    assert counts["pendingTasks"] >= 5 and counts["taskQueueId"] == queue_id
    first = claim(root_queue, queue_id, tasks=3)
    assert len(first) == 3
    rest = claim(root_queue, queue_id, tasks=32)
    assert len(rest) == 2
    assert {c["status"]["taskId"] for c in first + rest} == ids
    assert check_schema(root_queue.pendingTasks(queue_id), "pending-tasks-response")["pendingTasks"] == 0


def test_dependencies_all_completed_and_all_resolved(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    a, _ = create_task(root_queue, queue_id)
    b, _ = create_task(root_queue, queue_id)
    need_ok, s1 = create_task(root_queue, queue_id, dependencies=[a, b])
    need_any, s2 = create_task(root_queue, queue_id, dependencies=[a, b], requires="all-resolved")
    assert s1["state"] == s2["state"] == "unscheduled" and s1["runs"] == s2["runs"] == []

    dependents = check_schema(root_queue.listDependentTasks(a), "list-dependent-tasks-response")
    assert {t["status"]["taskId"] for t in dependents["tasks"]} == {need_ok, need_any}

    claims = {c["status"]["taskId"]: c for c in claim(root_queue, queue_id, tasks=2)}
    assert set(claims) == {a, b}
    run_queue(pserver, claims[a]).reportCompleted(a, 0)
    time.sleep(0.3)
    assert check_status(root_queue.status(need_ok))["state"] == "unscheduled"
    assert check_status(root_queue.status(need_any))["state"] == "unscheduled"

    run_queue(pserver, claims[b]).reportFailed(b, 0)
    status = wait_for(
        lambda: (s := root_queue.status(need_any)["status"])["state"] == "pending" and s,
        timeout=5,
        what="all-resolved dependent to become pending",
    )
    assert run_states(status) == [("pending", "scheduled", None)]
    time.sleep(0.3)
    assert check_status(root_queue.status(need_ok))["state"] == "unscheduled"

    # a dependency that already completed counts at once
    late, status = create_task(root_queue, queue_id, dependencies=[a])
    if status["state"] != "pending":
        wait_for(lambda: root_queue.status(late)["status"]["state"] == "pending", 5, what="late dependent")


def test_exception_with_retry_does_not_resolve_dependency(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    dep, _ = create_task(root_queue, queue_id)
    child, _ = create_task(root_queue, queue_id, dependencies=[dep], requires="all-resolved")
    c = claim_task(root_queue, queue_id, dep)
    run_queue(pserver, c).reportException(dep, 0, {"reason": "worker-shutdown"})
    time.sleep(0.5)
    assert check_status(root_queue.status(child))["state"] == "unscheduled"
    c = claim_task(root_queue, queue_id, dep)
    run_queue(pserver, c).reportException(dep, 1, {"reason": "malformed-payload"})
    wait_for(lambda: root_queue.status(child)["status"]["state"] == "pending", 5, what="dependent pending")


def test_schedule_task_self_dependency(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id = slugid.nice()
    status = check_status(root_queue.createTask(task_id, task_def(queue_id, dependencies=[task_id])))
    assert status["state"] == "unscheduled"
    status = check_status(root_queue.scheduleTask(task_id))
    assert run_states(status) == [("pending", "scheduled", None)]


def test_list_task_group(root_queue: taskcluster.Queue, queue_id: str) -> None:
    group = slugid.nice()
    ids = {create_task(root_queue, queue_id, taskGroupId=group)[0] for _ in range(3)}
    listing = check_schema(root_queue.listTaskGroup(group), "list-task-group-response")
    assert {t["status"]["taskId"] for t in listing["tasks"]} == ids
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(slugid.nice(), task_def(queue_id, taskGroupId=group, schedulerId="other-sched"))
    rest_error(exc, 409, "RequestConflict")


async def test_aio_lifecycle_and_longpoll_wakeup(pserver: PlatformProcess, queue_id: str) -> None:
    """A worker already waiting in claimWork gets a new task at once (notified, not polled)."""
    async with taskcluster.aio.createSession() as session:
        worker_q = taskcluster.aio.Queue(pserver.options(maxRetries=0), session=session)
        submit_q = taskcluster.aio.Queue(pserver.options(maxRetries=0), session=session)
        delays = []
        for trial in range(3):
            poll = asyncio.create_task(
                worker_q.claimWork(queue_id, {"workerGroup": "wg", "workerId": f"aio{trial}", "tasks": 1})
            )
            await asyncio.sleep(0.4)  # let the poll reach the server and wait
            assert not poll.done(), f"claimWork returned without work: {poll.result() if poll.done() else ''}"
            task_id = slugid.nice()
            await submit_q.createTask(task_id, task_def(queue_id))
            created_at = time.monotonic()
            resp = await asyncio.wait_for(poll, timeout=10)
            delays.append(time.monotonic() - created_at)
            check_schema(resp, "claim-work-response")
            assert [c["status"]["taskId"] for c in resp["tasks"]] == [task_id]
            c = resp["tasks"][0]
            rq = taskcluster.aio.Queue(pserver.options(c["credentials"], maxRetries=0), session=session)
            check_schema(await rq.reclaimTask(task_id, 0), "task-reclaim-response")
            check_status(await rq.reportCompleted(task_id, 0))
        print(f"claimWork pickup delays after createTask: {[round(d * 1000, 1) for d in delays]} ms")
        assert max(delays) < 1.0


async def test_abandoned_claim_work_does_not_swallow_a_task(pserver: PlatformProcess, queue_id: str) -> None:
    """A poller that disconnects mid long-poll must not be handed the next task (it would be lost)."""
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(pserver.options(maxRetries=0), session=session)
        for i in range(3):
            gone = asyncio.create_task(
                queue.claimWork(queue_id, {"workerGroup": "wg", "workerId": f"gone{i}"})
            )
            await asyncio.sleep(0.3)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
        await asyncio.sleep(0.3)
        task_id = slugid.nice()
        await queue.createTask(task_id, task_def(queue_id))
        started = time.monotonic()
        resp = await asyncio.wait_for(
            queue.claimWork(queue_id, {"workerGroup": "wg", "workerId": "alive"}), timeout=25
        )
        assert [c["status"]["taskId"] for c in resp["tasks"]] == [task_id], (
            f"task not handed to the live poller after {time.monotonic() - started:.1f}s: "
            f"{(await queue.status(task_id))['status']}"
        )
        assert time.monotonic() - started < 2


@pytest.mark.slow
async def test_claim_work_long_poll_returns_empty_after_about_20s(
    pserver: PlatformProcess, queue_id: str
) -> None:
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(pserver.options(maxRetries=0), session=session)
        started = time.monotonic()
        resp = await asyncio.wait_for(
            queue.claimWork(queue_id, {"workerGroup": "wg", "workerId": "idle"}), 40
        )
        waited = time.monotonic() - started
    check_schema(resp, "claim-work-response")
    assert resp == {"tasks": []}
    assert 15 <= waited <= 30, f"empty claimWork returned after {waited:.1f}s, expected ~20s"


@pytest.mark.parametrize("priority", ["highest", "low", "lowest"])
def test_status_answer_is_the_status_every_other_method_gives(
    root_queue: taskcluster.Queue, pserver: PlatformProcess, queue_id: str, priority: str
) -> None:
    """`status` is built from the task's columns (no definition decode); it must equal, field for
    field, the status createTask, claimWork and reportCompleted build from the whole task."""
    # An offset and six fractional digits: createTask normalises it, status must show the same text.
    deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).astimezone(
        dt.timezone(dt.timedelta(hours=1))
    )
    deadline_text = deadline.isoformat(timespec="microseconds")
    task_id = slugid.nice()
    body = task_def(queue_id, priority=priority, deadline=deadline_text, payload={"big": 10**40}, retries=3)
    status = check_status(root_queue.createTask(task_id, body))
    assert check_status(root_queue.status(task_id)) == status
    assert status["deadline"].endswith("Z") and len(status["deadline"]) == 24
    claimed = claim_task(root_queue, queue_id, task_id)
    assert check_status(root_queue.status(task_id)) == claimed["status"]
    assert root_queue.task(task_id)["payload"] == {"big": 10**40}  # beyond 64 bits, kept exactly
    completed = check_status(run_queue(pserver, claimed).reportCompleted(task_id, 0))
    assert check_status(root_queue.status(task_id)) == completed
