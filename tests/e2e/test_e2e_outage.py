"""End to end: the worker survives a queue outage (issue 3: "Transient queue errors are retried with
backoff; the worker never crashes on a queue outage").

The platform is SIGKILLed while a task runs and restarted on the same port and data directory a
few seconds later; the run must still be reported, and the same worker must take the next task.
"""

from __future__ import annotations

import time

import pytest
from helpers.submitter import Submitter

pytestmark = pytest.mark.timeout(150)


def test_platform_outage_mid_run_does_not_lose_the_run_or_the_worker(
    submitter: Submitter, start_worker, platform_server
) -> None:
    plat = platform_server()
    sub = Submitter(
        plat.queue(), plat.root_url, submitter.worker_type, plat.root_access_token, mark=submitter.mark
    )
    worker = start_worker(platform=plat)
    task_id = sub.create({"command": [["sh", "-c", "sleep 3; echo survived-outage"]], "maxRunTime": 120})
    sub.wait_running(task_id, worker=worker)

    plat.kill9()
    time.sleep(5)  # the task finishes while the queue is down: uploads and the report must wait
    assert worker.running, f"the worker died during the queue outage:\n{worker.tail()}"
    plat.start()

    run = sub.wait_run(task_id, timeout=90, worker=worker)
    assert run["state"] == "completed", f"{run}{sub.explain(task_id)}"
    assert "survived-outage" in sub.log(task_id)
    follow_up = sub.create({"command": [["true"]], "maxRunTime": 60})
    run = sub.wait_run(follow_up, timeout=60, worker=worker)
    assert run["state"] == "completed" and run["workerId"] == worker.worker_id, run
