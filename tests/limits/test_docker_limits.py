"""``taskMaxProcesses`` / ``taskMaxMemoryMegabytes`` on the docker engine (issue 14, acceptance 2).

The same two attacks as on the host, in a busybox container: a loop starting 200 children against
``taskMaxProcesses=64`` (Docker's ``pids_limit``; the fork count comes from the container's
``pids.events``) and an ``awk`` string that doubles until it holds all memory against
``taskMaxMemoryMegabytes=64`` (``mem_limit`` = ``memswap_limit``; Docker's ``State.OOMKilled``).
Each fails its task with the line naming the limit (the fork loop although its container exits
0); the worker and the next task are unaffected.
"""

from __future__ import annotations

import pytest
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(240)

# busybox sh dies at its first refused fork, so the loop runs in a subshell; the container then
# stays up for 3 s without forking (``read -t`` on its terminal is a builtin) and exits 0.
FORK_LOOP = (
    "( i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done ) 2>/dev/null; "
    "read -t 3 x < /dev/tty; exit 0"
)
MEMORY_HOG = "awk 'BEGIN { s = \"x\"; while (length(s) < 1024 * 1024 * 1024) s = s s; print length(s) }'"


def _run(submitter: Submitter, worker, image: str, script: str) -> tuple[dict, str]:
    task_id = submitter.create({"image": image, "command": ["sh", "-c", script], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=120, worker=worker)
    return run, submitter.log(task_id)


def _next_task_runs(submitter: Submitter, worker, image: str) -> None:
    run, log = _run(submitter, worker, image, "echo next-task-fine")
    assert run["state"] == "completed", (run, log[-3000:])
    assert "next-task-fine" in log
    assert worker.running, worker.tail()


def test_fork_loop_in_a_container_is_capped_by_task_max_processes(
    submitter: Submitter, start_worker, test_image: str
) -> None:
    worker = start_worker(engine="docker", dockerImage=test_image, taskMaxProcesses=64)
    run, log = _run(submitter, worker, test_image, FORK_LOOP)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "Exit Code: 0" in " ".join(log.split()), log[-3000:]
    assert "task hit taskMaxProcesses=64 (pids_limit):" in log and "refused" in log, log[-3000:]
    assert "taskMaxProcesses=64 (pids_limit)" in worker.output(), worker.tail()
    _next_task_runs(submitter, worker, test_image)


def test_memory_hog_in_a_container_is_oom_killed(
    submitter: Submitter, start_worker, test_image: str
) -> None:
    worker = start_worker(engine="docker", dockerImage=test_image, taskMaxMemoryMegabytes=64)
    run, log = _run(submitter, worker, test_image, MEMORY_HOG)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "task was OOM-killed: taskMaxMemoryMegabytes=64 (container memory limit)" in log, log[-3000:]
    _next_task_runs(submitter, worker, test_image)
