"""End to end on `engine: multiuser`: a task runs as a fresh OS user that is gone afterwards.

The detailed isolation attacks are tested by the multiuser engine's own suite (issue 4); this file
proves the whole path — platform process, worker process, official client — works with the engine.
Needs root (CI runs as root); skipped with the reason otherwise, a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ci import require_multiuser_host
from helpers.submitter import Submitter
from helpers.taskprocs import describe, wait_for_marked

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.root,
    pytest.mark.usefixtures("multiuser_host"),
]


@pytest.fixture
def multiuser_host() -> None:
    """Linux, root and useradd: skipped with the reason otherwise, a failure under CI=true."""
    require_multiuser_host("the multiuser engine (it creates task users)")


@pytest.fixture
def homes_dir() -> Iterator[Path]:
    """A tasksDir that task users can traverse (pytest's tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="tcw-e2e-homes-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_multiuser_task_runs_as_its_own_user_which_is_removed_afterwards(
    submitter: Submitter, start_worker, homes_dir: Path
) -> None:
    worker = start_worker(
        engine="multiuser",
        headlessTasks=True,
        tasksDir=str(homes_dir),
        env={"E2E_WORKER_ONLY_VAR": "worker-secret-e2e"},
    )
    script = (
        "echo ID=$(id -u) NAME=$(id -un) HOME=$HOME WD=$TASK_WORKDIR PWD=$(pwd -P); "
        "echo LEAK=${E2E_WORKER_ONLY_VAR:-none}; "
        "(setsid sleep 300 &) ; echo > owned-file"
    )
    task_id = submitter.create({"command": [["sh", "-c", script]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", run
    log = submitter.log(task_id)
    match = re.search(r"ID=(\d+) NAME=(\S+) HOME=(\S+) WD=(\S+) PWD=(\S+)", log)
    assert match, log
    uid, name, home, workdir, cwd = int(match[1]), match[2], match[3], match[4], match[5]
    assert uid != os.geteuid(), "the task ran with the worker's uid"
    assert name.startswith("task_"), f"task user {name!r} is not named task_<...> like generic-worker's"
    assert home == workdir == cwd, "the task user's home is the task directory, and commands run there"
    assert workdir.startswith(str(homes_dir))
    assert "LEAK=none" in log, "the worker's environment leaked into the task"

    left = wait_for_marked(submitter.mark, present=False, timeout=10)
    assert not left, f"the task user's daemon survived:\n{describe(left)}"
    deadline = time.monotonic() + 15
    while _user_exists(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _user_exists(name), f"task user {name} still exists after the task"
    assert worker.running, worker.tail()
