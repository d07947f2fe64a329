"""End to end: a `tcworker run` process runs generic-worker payloads submitted with the official client.

Covers the plain outcomes of a run (issue 3, acceptance 1): completed with its log and header,
failed at the first failing command, a missing program is `failed` not an exception, and the
environment rules of spec/worker.md §2.2 (payload env, reserved variables that the payload cannot
spoof, inherited HOME/PATH/USER, the worker's access token hidden).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.submitter import Submitter, worker_lines
from helpers.workerproc import PROVISIONER_ID

import tcworker

pytestmark = pytest.mark.timeout(120)


def test_trivial_task_completes_with_output_and_generic_worker_header(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["echo", "hello-from-task"], ["sh", "-c", "echo second-$((40+2))"]], "maxRunTime": 60}
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", run
    assert run["workerId"] == worker.worker_id

    log = submitter.log(task_id)
    assert "hello-from-task" in log
    assert "second-42" in log, "the second command did not run"
    assert "=== Task Starting ===" in log and "=== Task Finished ===" in log
    assert "Executing command 0" in log and "Executing command 1" in log
    assert re.search(r"Exit Code: 0\b", log)

    header = log.split("=== Task Starting ===")[0]
    assert f"{PROVISIONER_ID}/{submitter.worker_type}" in header, "pool missing from the log header"
    assert task_id in header, "task id missing from the log header"
    assert worker.worker_id in header, "worker id missing from the log header"
    assert "simple" in header, "engine missing from the log header"
    assert tcworker.__version__ in header, "worker version missing from the log header"
    assert re.search(r"[Rr]un\s*(ID|Id|id)\W*0\b", header), "run id missing from the log header"

    lines = worker_lines(log)
    assert lines, "no line carries generic-worker's `[taskcluster <timestamp>] ` prefix"
    assert any("Task ID" in line and task_id in line for line in lines)
    assert "hello-from-task" in log.splitlines(), "task output must reach the log unprefixed"


def test_logs_are_published_under_their_default_names(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create({"command": [["echo", "log-names"]], "maxRunTime": 60})
    assert submitter.wait_run(task_id, worker=worker)["state"] == "completed"
    arts = submitter.artifacts(task_id, 0)
    assert "public/logs/live_backing.log" in arts, sorted(arts)
    assert "public/logs/live.log" in arts, sorted(arts)
    assert arts["public/logs/live_backing.log"]["contentType"].startswith("text/plain")
    assert submitter.log(task_id, name="public/logs/live.log") == submitter.log(task_id)


def test_custom_log_names_from_payload_are_used(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["echo", "custom-logs"]],
            "maxRunTime": 60,
            "logs": {"live": "public/custom/live.log", "backing": "public/custom/backing.log"},
        }
    )
    assert submitter.wait_run(task_id, worker=worker)["state"] == "completed"
    arts = submitter.artifacts(task_id, 0)
    assert "public/custom/backing.log" in arts and "public/custom/live.log" in arts, sorted(arts)
    assert "public/logs/live_backing.log" not in arts
    assert "custom-logs" in submitter.log(task_id, name="public/custom/backing.log")


def test_failure_stops_at_first_failing_command(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [
                ["sh", "-c", "echo FIRST-$((1+1))"],
                ["sh", "-c", "echo failing-now; exit 3"],
                # The marker is computed, so a log line echoing the command text cannot fake it.
                ["sh", "-c", "echo THIRD-$((1+2))-RAN"],
            ],
            "maxRunTime": 60,
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "failed", run
    log = submitter.log(task_id)
    assert "FIRST-2" in log and "failing-now" in log
    assert "THIRD-3-RAN" not in log, "a command after the failing one was executed"
    assert re.search(r"Exit Code: 3\b", log)


@pytest.mark.parametrize(
    "command",
    [["/nonexistent/program-e2e"], ["./not-executable.sh"]],
    ids=["missing-program", "not-executable"],
)
def test_program_that_cannot_start_fails_the_task_not_the_worker(
    submitter: Submitter, start_worker, command: list[str]
) -> None:
    worker = start_worker(numberOfTasksToRun=2)
    bad = submitter.create(
        {
            "command": [
                ["sh", "-c", "echo '#!/bin/sh' > not-executable.sh; chmod 0644 not-executable.sh"],
                command,
            ],
            "maxRunTime": 60,
        }
    )
    good = submitter.create({"command": [["true"]], "maxRunTime": 60})
    run = submitter.wait_run(bad, worker=worker)
    assert run["state"] == "failed", (
        f"a program that cannot start must resolve failed (spec §1.10), got {run}"
    )
    assert submitter.wait_run(good, worker=worker)["state"] == "completed"
    assert worker.wait(30) == 0


def test_env_payload_applied_reserved_vars_forced_defaults_inherited(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker(
        env={
            "HOME": "/root/e2e-home",
            "USER": "e2e-user",
            "PATH": "/usr/local/bin:/usr/bin:/bin:/e2e/extra",
            # The worker reads TASKCLUSTER_ACCESS_TOKEN as its own credential; it must never reach tasks.
            "TASKCLUSTER_ACCESS_TOKEN": submitter.root_token,
        }
    )
    spoof = {
        "TASK_ID": "spoofed",
        "RUN_ID": "99",
        "TASK_WORKDIR": "/spoofed",
        "TASK_GROUP_ID": "spoofed",
        "TASKCLUSTER_ROOT_URL": "http://spoofed.example",
    }
    task = submitter.task_definition(
        {
            "command": [["sh", "-c", "env; echo PWD_IS=$(pwd -P)"]],
            "maxRunTime": 60,
            "env": {"E2E_FOO": "bar baz", **spoof},
        }
    )
    task_id = submitter.create_task(task)
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", run
    log = submitter.log(task_id)
    env = dict(line.split("=", 1) for line in log.splitlines() if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line))

    assert env.get("E2E_FOO") == "bar baz"
    assert env.get("TASK_ID") == task_id
    assert env.get("RUN_ID") == "0"
    assert env.get("TASK_GROUP_ID") == task["taskGroupId"]
    assert env.get("TASKCLUSTER_ROOT_URL") == submitter.root_url
    workdir = env.get("TASK_WORKDIR", "")
    assert workdir.startswith("/") and workdir != "/spoofed"
    assert env.get("PWD_IS") == workdir, "commands must run in TASK_WORKDIR"
    assert workdir.startswith(str(worker.workdir / "tasks")), "task dir must be under tasksDir"
    assert env.get("HOME") == "/root/e2e-home"
    assert env.get("USER") == "e2e-user"
    assert env.get("PATH") == "/usr/local/bin:/usr/bin:/bin:/e2e/extra"
    assert "TASKCLUSTER_ACCESS_TOKEN" not in env, "the worker's access token leaked into the task env"
    token = submitter.root_token
    assert token not in log, "the root access token appears in the task log"


def test_payload_may_override_home_path_user(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {
            "command": [["sh", "-c", "echo H=$HOME U=$USER P=$PATH"]],
            "maxRunTime": 60,
            "env": {"HOME": "/tmp/h", "USER": "u2", "PATH": "/usr/bin:/bin:/p2"},
        }
    )
    assert submitter.wait_run(task_id, worker=worker)["state"] == "completed"
    assert "H=/tmp/h U=u2 P=/usr/bin:/bin:/p2" in submitter.log(task_id)


def test_task_directory_is_removed_after_the_task_when_cleanup_enabled(
    submitter: Submitter, start_worker
) -> None:
    worker = start_worker(numberOfTasksToRun=2)
    first = submitter.create({"command": [["sh", "-c", "echo data > out.txt; pwd -P"]], "maxRunTime": 60})
    second = submitter.create({"command": [["true"]], "maxRunTime": 60})
    assert submitter.wait_run(first, worker=worker)["state"] == "completed"
    assert submitter.wait_run(second, worker=worker)["state"] == "completed"
    assert worker.wait(30) == 0
    first_dir = next(line for line in submitter.log(first).splitlines() if line.startswith("/"))
    assert first_dir.startswith(str(worker.workdir / "tasks"))
    assert not Path(first_dir).exists(), f"task dir {first_dir} survived although cleanUpTaskDirs is true"
