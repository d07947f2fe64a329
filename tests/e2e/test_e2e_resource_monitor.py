"""End to end (issue 14): the resource monitor (spec §2.4, generic-worker 83.4's resourceMonitor).

A real ``tcworker run`` on the simple engine (and one on the docker engine) runs real tasks from
the platform process. Each command's footer carries generic-worker's memory lines plus the task's
own average/peak; a task holding 200 MiB shows a peak of at least that. For the abort, the
thresholds are set so the machine's current state trips them (``maxMemoryUsagePercent`` 1 — the
config's minimum — and a ``minAvailableMemoryBytes`` larger than any RAM,
``allowedHighMemoryDurationSecs`` 1): a ``sleep 600`` is killed within seconds, the run is
``failed`` with the line naming the thresholds, and the worker goes on to the next task.
"""

from __future__ import annotations

import re
import time

import pytest
from helpers.dockerimage import TEST_IMAGE
from helpers.submitter import Submitter
from helpers.taskprocs import describe, wait_for_marked

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
HUGE = 1 << 50  # a minAvailableMemoryBytes no machine's available memory reaches
MEMORY_LINE = re.compile(r"^\[taskcluster [^\]]*\]\s+(?P<label>[A-Za-z ]+Memory[A-Za-z ]*): (?P<value>.+)$")
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _footers(log: str) -> list[dict[str, int]]:
    """The memory lines of each command footer, in bytes, in command order."""
    footers: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in log.splitlines():
        if "Executing command" in line:
            current = {}
            footers.append(current)
            continue
        m = MEMORY_LINE.match(line.strip())
        if m and current is not None:
            number, unit = m.group("value").split()
            current[m.group("label").strip()] = int(float(number) * UNITS[unit])
    return footers


def test_each_command_footer_has_average_and_peak_memory(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    hold = "import time; b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    task_id = submitter.create(
        {"command": [["python3", "-c", hold], ["sleep", "1"]], "maxRunTime": 60},
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    first, second = _footers(log)
    for footer in (first, second):
        for label in (
            "Average Available System Memory",
            "Average System Memory Used",
            "Peak System Memory Used",
            "Total System Memory",
            "Average Task Memory Used",
            "Peak Task Memory Used",
        ):
            assert label in footer, (label, footer, log[-3000:])
        assert footer["Peak System Memory Used"] <= footer["Total System Memory"]
    assert first["Peak Task Memory Used"] >= 190 * MIB, log[-3000:]
    assert first["Average Task Memory Used"] <= first["Peak Task Memory Used"]
    assert second["Peak Task Memory Used"] < 100 * MIB, log[-3000:]  # `sleep`: nothing of the first
    # generic-worker's column: the lines sit between Wall Time and Result
    block = log[log.index("Wall Time") : log.index("Result")]
    assert "Peak System Memory Used" in block and "Peak Task Memory Used" in block


def test_payload_can_switch_the_monitor_off(submitter: Submitter, start_worker) -> None:
    worker = start_worker()
    task_id = submitter.create(
        {"command": [["true"]], "maxRunTime": 30, "features": {"resourceMonitor": False}}
    )
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    assert "Exit Code: 0" in log and "System Memory" not in log, log[-3000:]


def test_sustained_high_memory_aborts_the_task_as_failed(submitter: Submitter, start_worker) -> None:
    worker = start_worker(
        maxMemoryUsagePercent=1, minAvailableMemoryBytes=HUGE, allowedHighMemoryDurationSecs=1
    )
    started = time.monotonic()
    task_id = submitter.create({"command": [["sleep", "600"], ["echo", "never"]], "maxRunTime": 900})
    submitter.wait_running(task_id, worker=worker)
    assert wait_for_marked(submitter.mark, present=True, timeout=30), "sleep 600 never started"
    run = submitter.wait_run(task_id, worker=worker, timeout=60)
    elapsed = time.monotonic() - started
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    left = wait_for_marked(submitter.mark, present=False, timeout=5)
    assert not left, describe(left)
    assert elapsed < 60, elapsed
    assert re.search(
        r"Memory usage above 1% and available memory less than [\d.]+ GiB persisted for over 1s!", log
    ), log[-3000:]
    assert (
        f"maxMemoryUsagePercent=1, minAvailableMemoryBytes={HUGE}, allowedHighMemoryDurationSecs=1" in log
    ), log[-3000:]
    assert "Command ABORTED after" in log and "sustained high memory usage" in log, log[-3000:]
    assert "Peak System Memory Used" in log.split("Command ABORTED after", 1)[1], log[-3000:]
    assert "Executing command 1" not in log, log[-3000:]

    # the worker goes on: a task that asks for no monitor runs to completion on the same worker
    after = submitter.create(
        {"command": [["echo", "still-here"]], "maxRunTime": 30, "features": {"resourceMonitor": False}}
    )
    run = submitter.wait_run(after, worker=worker)
    assert run["state"] == "completed", (run, submitter.log(after)[-3000:])
    assert worker.running


def test_disable_oom_protection_only_warns(submitter: Submitter, start_worker) -> None:
    worker = start_worker(
        disableOOMProtection=True,
        maxMemoryUsagePercent=1,
        minAvailableMemoryBytes=HUGE,
        allowedHighMemoryDurationSecs=1,
    )
    task_id = submitter.create({"command": [["sleep", "3"]], "maxRunTime": 30})
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    assert "persisted for over 1s!" in log and "OOM protections are disabled, continuing task..." in log
    assert log.count("OOM protections are disabled") == 1, log[-3000:]  # warned once, not per sample
    assert "Aborting task" not in log, log[-3000:]


def test_pool_can_switch_the_monitor_off(submitter: Submitter, start_worker) -> None:
    worker = start_worker(
        enableResourceMonitor=False,
        maxMemoryUsagePercent=1,
        minAvailableMemoryBytes=HUGE,
        allowedHighMemoryDurationSecs=1,
    )
    task_id = submitter.create({"command": [["sleep", "3"]], "maxRunTime": 30})
    run = submitter.wait_run(task_id, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    assert "System Memory" not in log, log[-3000:]


@pytest.mark.docker
def test_docker_engine_reports_container_memory_and_aborts(
    submitter: Submitter, start_worker, test_image: str
) -> None:
    worker = start_worker(engine="docker", dockerImage=TEST_IMAGE, numberOfTasksToRun=1)
    # busybox: a shell variable of 64 MiB held for 2 s (head + tr keep it in the shell's memory)
    hold = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 2; echo ${#x}"
    task_id = submitter.create({"image": TEST_IMAGE, "command": ["sh", "-c", hold], "maxRunTime": 60})
    run = submitter.wait_run(task_id, worker=worker, timeout=90)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    (footer,) = _footers(log)
    assert footer["Peak Task Memory Used"] >= 64 * MIB, (footer, log[-3000:])
    assert footer["Total System Memory"] >= footer["Peak System Memory Used"] > 0

    # thresholds a real machine always trips: the container is killed and the run fails
    assert worker.wait(60) == 0
    worker = start_worker(
        engine="docker",
        dockerImage=TEST_IMAGE,
        maxMemoryUsagePercent=1,
        minAvailableMemoryBytes=HUGE,
        allowedHighMemoryDurationSecs=1,
    )
    task_id = submitter.create({"image": TEST_IMAGE, "command": ["sleep", "600"], "maxRunTime": 900})
    run = submitter.wait_run(task_id, worker=worker, timeout=90)
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "persisted for over 1s!" in log and "allowedHighMemoryDurationSecs=1" in log, log[-3000:]
