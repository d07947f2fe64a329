"""End to end: a worker's open descriptors stay flat across hundreds of tasks.

Each host run hands a parked stub its command through pipes, watches the command through a
pidfd and an output pipe, and parks the next stub after its report: several descriptors per task,
each of which a leak would keep forever (the review of the fifth session found two per command).
A real `tcworker run` runs 200 tasks (quick ends, processes left behind, failures, start errors)
and `/proc/<worker>/fd` is counted after the first 20 and at the end. The HTTP connection pool to
the platform may open or close a connection or two meanwhile; a leak per task would add hundreds.
The tasks run without a live log: the live-log server keeps each finished log open for
``RETAIN_AFTER_END`` (120 s, at most ``MAX_ENDED_KEPT`` of them; tests/livelog/test_retention.py)
so that its URL still answers, which is a retention, not a leak, and would hide one here.
"""

from __future__ import annotations

import os
import time

import pytest
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(300)

SCRIPTS = (
    ["true"],
    ["sh", "-c", "echo hello"],
    ["sh", "-c", "sleep 30 & echo left"],  # a process left behind: the slow end of a command
    ["sh", "-c", "exit 3"],
    ["no-such-command-tcw-fds"],
)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _run_batch(submitter: Submitter, worker, count: int, offset: int) -> None:  # noqa: ANN001
    task_ids = [
        submitter.create(
            {"command": [SCRIPTS[(offset + i) % len(SCRIPTS)]], "maxRunTime": 60, "features": {"liveLog": False}}
        )
        for i in range(count)
    ]
    for task_id in task_ids:
        run = submitter.wait_run(task_id, worker=worker, timeout=120, poll=0.05)
        assert run["state"] in ("completed", "failed"), run


def test_descriptors_stay_flat_across_200_tasks(submitter: Submitter, start_worker) -> None:  # noqa: ANN001
    worker = start_worker(capacity=2)
    _run_batch(submitter, worker, 20, 0)
    time.sleep(0.5)  # the last run's destroy and the pool's top-up happen after its report
    after_20 = _fds(worker.pid)
    _run_batch(submitter, worker, 180, 20)
    time.sleep(0.5)
    after_200 = _fds(worker.pid)
    print(f"worker descriptors after 20 tasks: {after_20}, after 200: {after_200}")
    assert after_200 <= after_20 + 4, (after_20, after_200, sorted(os.listdir(f"/proc/{worker.pid}/fd")))
