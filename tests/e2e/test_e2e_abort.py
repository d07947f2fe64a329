"""End to end: every way a running task is cut short, and that nothing of it survives.

maxRunTime, cancellation seen through a reclaim 409, SIGTERM (worker-shutdown, exit 72, retried
on another worker), SIGINT (finish, exit 71) and `kill -9` of the worker (claim-expired, retried
on another worker). "Nothing survives" is checked with psutil over the whole machine: each task's
processes carry a unique E2E_MARK variable, inherited through `setsid` and double forks.
"""

from __future__ import annotations

import signal
import time

import pytest
from helpers.submitter import Submitter
from helpers.taskprocs import describe, marked_processes, wait_for_marked

pytestmark = pytest.mark.timeout(150)

# A process tree that tries every way to outlive a plain kill of the direct child: background
# children, a double-forked orphan, a setsid'd orphan in its own session, and one ignoring SIGTERM.
ESCAPING_TREE = (
    "sleep 300 & "
    "(sleep 301 &) ; "
    "setsid sh -c 'sleep 302 & exit 0' ; "
    "setsid sh -c 'trap \"\" TERM HUP INT; sleep 303' & "
    "echo tree-started; "
    "sleep 304"
)
TREE_SIZE = 6  # sleep 300, 301, 302, the trapping sh + its sleep 303, the main sh's sleep 304 (+ sh itself)


def _wait_tree(submitter: Submitter, minimum: int = TREE_SIZE, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(marked_processes(submitter.mark)) >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError(f"task tree never started: {describe(marked_processes(submitter.mark))}")


def _assert_no_survivors(submitter: Submitter, grace: float = 1.0) -> None:
    left = wait_for_marked(submitter.mark, present=False, timeout=grace)
    assert not left, f"processes of the task survived:\n{describe(left)}"


def test_max_run_time_kills_the_whole_tree_and_fails(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["sh", "-c", ESCAPING_TREE], ["sh", "-c", "echo SECOND-$((2+2))"]], "maxRunTime": 4}
    )
    submitter.wait_running(task_id, worker=worker)
    _wait_tree(submitter)
    started = time.monotonic()
    run = submitter.wait_run(task_id, timeout=60, worker=worker)
    elapsed = time.monotonic() - started
    assert run["state"] == "failed", f"maxRunTime must resolve failed (spec §2.1), got {run}"
    _assert_no_survivors(submitter)
    assert elapsed < 30, f"resolved {elapsed:.1f}s after the tree started, maxRunTime was 4s"
    log = submitter.log(task_id)
    assert "tree-started" in log
    assert "max run time exceeded" in log
    assert "SECOND-4" not in log, "commands after the aborted one must not run"
    assert worker.running, "the worker must keep going after a maxRunTime abort"


def test_cancel_mid_run_kills_task_and_worker_goes_on(submitter: Submitter, start_worker) -> None:
    worker = start_worker(reclaimIntervalSecs=1)
    task_id = submitter.create({"command": [["sh", "-c", ESCAPING_TREE]], "maxRunTime": 300})
    submitter.wait_running(task_id, worker=worker)
    _wait_tree(submitter)

    submitter.queue.cancelTask(task_id)
    cancelled_at = time.monotonic()
    run = submitter.wait_run(task_id, timeout=10)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "canceled"), run
    left = wait_for_marked(submitter.mark, present=False, timeout=15)
    assert not left, f"cancelled task still has processes 15s later:\n{describe(left)}"
    took = time.monotonic() - cancelled_at
    assert took < 10, f"worker needed {took:.1f}s to notice the cancellation with reclaimIntervalSecs 1"

    status = submitter.status(task_id)
    assert len(status["runs"]) == 1, "a cancelled task must not be retried"
    assert worker.running, f"the worker died after a cancellation:\n{worker.tail()}"
    follow_up = submitter.create({"command": [["echo", "after-cancel"]], "maxRunTime": 60})
    run = submitter.wait_run(follow_up, worker=worker)
    assert run["state"] == "completed" and run["workerId"] == worker.worker_id, run


RUN0_SLEEPS = 'if [ "$RUN_ID" = 0 ]; then echo run0-started; sleep 300; fi; echo finished-run-$RUN_ID'


def test_sigterm_mid_run_resolves_worker_shutdown_exits_72_and_retry_completes_elsewhere(
    submitter: Submitter, start_worker
) -> None:
    first = start_worker()
    task_id = submitter.create({"command": [["sh", "-c", RUN0_SLEEPS]], "maxRunTime": 300}, retries=2)
    submitter.wait_running(task_id, worker=first)
    _wait_tree(submitter, minimum=2)

    first.send(signal.SIGTERM)
    assert first.wait(45) == 72, f"SIGTERM must exit 72 (spec §1.7):\n{first.tail()}"
    status = submitter.status(task_id)
    run0 = status["runs"][0]
    assert (run0["state"], run0.get("reasonResolved")) == ("exception", "worker-shutdown"), status
    assert len(status["runs"]) == 2 and status["runs"][1]["reasonCreated"] == "retry", status
    _assert_no_survivors(submitter)
    assert "run0-started" in submitter.log(task_id, 0), "the aborted run's log must still be uploaded"

    second = start_worker()
    run1 = submitter.wait_run(task_id, 1, worker=second)
    assert run1["state"] == "completed" and run1["workerId"] == second.worker_id, run1
    assert "finished-run-1" in submitter.log(task_id, 1)


def test_sigint_lets_the_running_task_finish_then_exits_71(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create({"command": [["sh", "-c", "sleep 2; echo sigint-finished"]], "maxRunTime": 60})
    submitter.wait_running(task_id, worker=worker)
    _wait_tree(submitter, minimum=1)
    worker.send(signal.SIGINT)
    later = submitter.create({"command": [["true"]], "maxRunTime": 60})
    assert worker.wait(45) == 71, f"SIGINT must exit 71 (spec §1.7):\n{worker.tail()}"
    run = submitter.wait_run(task_id, timeout=5)
    assert run["state"] == "completed", run
    assert "sigint-finished" in submitter.log(task_id)
    assert submitter.status(later)["runs"][0]["state"] == "pending", "no claims after SIGINT"


def test_kill_9_of_worker_expires_claim_and_retry_completes_on_another_worker(
    submitter: Submitter, start_worker, platform_server
) -> None:
    plat = platform_server(claim_timeout=3)
    sub = Submitter(
        plat.queue(), plat.root_url, submitter.worker_type, plat.root_access_token, mark=submitter.mark
    )
    first = start_worker(platform=plat, reclaimIntervalSecs=1)
    task_id = sub.create({"command": [["sh", "-c", RUN0_SLEEPS]], "maxRunTime": 300}, retries=2)
    sub.wait_running(task_id, worker=first)
    _wait_tree(submitter, minimum=2)

    # Three claim timeouts later the run is still ours: the worker's reclaims keep it alive.
    time.sleep(6)
    status = sub.status(task_id)
    assert status["runs"][0]["state"] == "running", f"reclaims did not keep the claim alive: {status}"

    first.send(signal.SIGKILL)
    first.wait(10)
    for proc in marked_processes(submitter.mark):  # the host "died" with its worker
        proc.kill()
    run0 = sub.wait_run(task_id, 0, timeout=40)
    assert (run0["state"], run0.get("reasonResolved")) == ("exception", "claim-expired"), run0
    status = sub.status(task_id)
    assert len(status["runs"]) == 2 and status["runs"][1]["reasonCreated"] == "retry", status

    second = start_worker(platform=plat, reclaimIntervalSecs=1)
    run1 = sub.wait_run(task_id, 1, worker=second)
    assert run1["state"] == "completed" and run1["workerId"] == second.worker_id, run1
    assert "finished-run-1" in sub.log(task_id, 1)
