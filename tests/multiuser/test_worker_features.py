"""``osGroups`` and ``features.runTaskAsCurrentUser`` through a real worker process and the real
platform: scopes, pool gates and what the commands actually get (issue 4, second bullet)."""

from __future__ import annotations

import grp
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

USERS_GID = grp.getgrnam("users").gr_gid


def pool(submitter: Any) -> str:
    return f"{submitter.task_definition({'command': [['true']], 'maxRunTime': 1})['provisionerId']}/{submitter.worker_type}"


def test_os_group_with_its_scope_is_granted(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser")
    scope = f"generic-worker:os-group:{pool(submitter)}/users"
    task_id = submitter.create(
        {"command": [["sh", "-c", "echo groups=$(id -G)"]], "maxRunTime": 60, "osGroups": ["users"]},
        scopes=[scope],
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", log
    line = next(line for line in log.splitlines() if line.startswith("groups="))
    assert str(USERS_GID) in line.removeprefix("groups=").split()


def test_os_group_without_its_scope_is_malformed_payload(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser")
    task_id = submitter.create({"command": [["id"]], "maxRunTime": 60, "osGroups": ["users"]})
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert f"generic-worker:os-group:{pool(submitter)}/users" in log


def test_simple_engine_only_allows_the_worker_users_groups(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="simple")
    scope = f"generic-worker:os-group:{pool(submitter)}/users"
    task_id = submitter.create({"command": [["id"]], "maxRunTime": 60, "osGroups": ["users"]}, scopes=[scope])
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "task definition contains unsupported osGroups: [users]" in log


def test_run_task_as_current_user_with_its_scope(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser", capacity=1)
    scope = f"generic-worker:run-task-as-current-user:{pool(submitter)}"
    task_id = submitter.create(
        {
            "command": [["sh", "-c", 'echo uid=$(id -u); cat "$TASK_USER_CREDENTIALS"; echo']],
            "maxRunTime": 60,
            "features": {"runTaskAsCurrentUser": True},
        },
        scopes=[scope],
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", log
    assert "uid=0" in log.splitlines()
    assert '"name": "task_' in log and '"password": "pWd0_' in log


def test_run_task_as_current_user_needs_its_scope(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser", capacity=1)
    task_id = submitter.create(
        {"command": [["id", "-u"]], "maxRunTime": 60, "features": {"runTaskAsCurrentUser": True}}
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert f"generic-worker:run-task-as-current-user:{pool(submitter)}" in log


def test_run_task_as_current_user_is_off_with_capacity_above_one(start_host_worker: Any) -> None:
    worker, submitter = start_host_worker(engine="multiuser", capacity=2)
    scope = f"generic-worker:run-task-as-current-user:{pool(submitter)}"
    task_id = submitter.create(
        {"command": [["id", "-u"]], "maxRunTime": 60, "features": {"runTaskAsCurrentUser": True}},
        scopes=[scope],
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "capacity > 1" in log
