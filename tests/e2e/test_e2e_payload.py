"""End to end: payload validation and the resolutions the payload itself decides.

A malformed payload resolves `exception/malformed-payload` with a log naming every problem, and the
same worker process goes on to the next task (spec/worker.md §1.10, §1.11, §7 cases 8, 10-12).
`onExitStatus.retry` turns an exit code into `intermittent-task`, which the queue retries.
"""

from __future__ import annotations

import datetime as dt

import pytest
from helpers.submitter import Submitter, iso, parse_iso

pytestmark = pytest.mark.timeout(120)


def _errors_section(log: str) -> str:
    """The part of the log after the schema dump, where GW lists one `- <error>` per problem."""
    marker = "payload is invalid"
    assert marker in log, (
        f"no `TASK FAIL since the task payload is invalid` line (spec §1.11):\n{log[-3000:]}"
    )
    return log[log.rindex(marker) :]


def test_malformed_payloads_are_reported_and_the_worker_goes_on(submitter: Submitter, start_worker) -> None:
    empty = submitter.create({}, mark=False)
    unknown_key = submitter.create({"command": [["true"]], "maxRunTime": 30, "bogusKeyE2e": 1})
    negative_retry = submitter.create(
        {"command": [["true"]], "maxRunTime": 30, "onExitStatus": {"retry": [-1]}}
    )
    several = submitter.create(
        {"command": [["true"]], "maxRunTime": "soon", "extraKeyE2e": True, "env": {"E2E_NUMERIC": 5}},
        mark=False,
    )
    good = submitter.create({"command": [["echo", "after-malformed"]], "maxRunTime": 30})
    worker = start_worker(numberOfTasksToRun=5)

    for task_id in (empty, unknown_key, negative_retry, several):
        run = submitter.wait_run(task_id, worker=worker)
        assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), (task_id, run)
        assert len(submitter.status(task_id)["runs"]) == 1, "malformed-payload must not be retried"

    errors = _errors_section(submitter.log(empty))
    assert "command" in errors and "maxRunTime" in errors, errors
    full = submitter.log(empty)
    assert "jsonschema" in full.lower() or '"$schema"' in full, "the log must show the payload schema"

    assert "bogusKeyE2e" in _errors_section(submitter.log(unknown_key))

    errors = _errors_section(submitter.log(negative_retry))
    assert "retry" in errors and "-1" in errors, errors

    errors = _errors_section(submitter.log(several))
    for problem in ("maxRunTime", "extraKeyE2e", "E2E_NUMERIC"):
        assert problem in errors, f"problem {problem!r} not named:\n{errors}"

    run = submitter.wait_run(good, worker=worker)
    assert run["state"] == "completed" and run["workerId"] == worker.worker_id
    assert worker.wait(30) == 0


def test_max_run_time_above_pool_maximum_is_malformed(submitter: Submitter, start_worker) -> None:
    worker = start_worker(maxTaskRunTime=300)
    task_id = submitter.create({"command": [["true"]], "maxRunTime": 310})
    run = submitter.wait_run(task_id, worker=worker)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), run
    log = submitter.log(task_id)
    assert "310" in log and "300" in log and "maxRunTime" in log


def test_artifact_expiry_outside_the_task_window_is_malformed(submitter: Submitter, start_worker) -> None:
    worker = start_worker(numberOfTasksToRun=3)
    cases: dict[str, str] = {}
    for case in ("before-deadline", "after-expiry", "at-expiry"):
        task = submitter.task_definition(
            {"command": [["sh", "-c", "echo x > a.txt"]], "maxRunTime": 30, "artifacts": []}
        )
        deadline, expires = parse_iso(task["deadline"]), parse_iso(task["expires"])
        when = {
            "before-deadline": deadline - dt.timedelta(minutes=1),
            "after-expiry": expires + dt.timedelta(minutes=1),
            "at-expiry": expires,
        }[case]
        task["payload"]["artifacts"] = [
            {"type": "file", "path": "a.txt", "name": "public/a.txt", "expires": iso(when)}
        ]
        cases[case] = submitter.create_task(task)

    for case, fragment in (
        ("before-deadline", "before task deadline"),
        ("after-expiry", "after task expiry"),
    ):
        run = submitter.wait_run(cases[case], worker=worker)
        assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), (case, run)
        assert fragment in submitter.log(cases[case]), case
    run = submitter.wait_run(cases["at-expiry"], worker=worker)
    assert run["state"] == "completed", run
    art = submitter.artifacts(cases["at-expiry"], 0)["public/a.txt"]
    task_expires = submitter.queue.task(cases["at-expiry"])["expires"]
    assert parse_iso(art["expires"]) == parse_iso(task_expires)


def test_on_exit_status_retry_is_intermittent_and_the_queue_retries(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker(numberOfTasksToRun=3)
    retried = submitter.create(
        {
            "command": [["sh", "-c", 'echo run-$RUN_ID; [ "$RUN_ID" != 0 ] || exit 5']],
            "maxRunTime": 30,
            "onExitStatus": {"retry": [5]},
        },
        retries=1,
    )
    unlisted = submitter.create(
        {"command": [["sh", "-c", "exit 7"]], "maxRunTime": 30, "onExitStatus": {"retry": [5]}}
    )
    run0 = submitter.wait_run(retried, 0, worker=worker)
    assert (run0["state"], run0.get("reasonResolved")) == ("exception", "intermittent-task"), run0
    run1 = submitter.wait_run(retried, 1, worker=worker)
    assert run1["reasonCreated"] == "task-retry" and run1["state"] == "completed", run1
    assert submitter.wait_run(unlisted, worker=worker)["state"] == "failed"
    assert worker.wait(30) == 0
