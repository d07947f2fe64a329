"""Per-task cgroups on the host engines (issue 14, acceptance 2 and the cgroup half of 1).

A fork loop capped by ``taskMaxProcesses`` and a memory hog capped by ``taskMaxMemoryMegabytes``
fail their task with a task-log line naming the limit, even when the command exits 0 afterwards;
the worker and the next task are unaffected and the run's cgroup is gone. A double-forked,
``setsid``, environment-clearing child that also closes its output (nothing but the cgroup ties
it to the task any more) is gone within 5 s of a cancel. The loops are bounded (200 children at
most, small limits) so the shared machine survives even a broken limit.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import subprocess
import time
from pathlib import Path

import pytest
from helpers.ci import skip_or_fail
from helpers.polling import eventually
from helpers.submitter import Submitter
from helpers.taskprocs import processes_with_arg

from tcworker.engines import cgroups

pytestmark = pytest.mark.timeout(180)

# Starts 200 sleeping children, counts the forks the kernel refuses, exits 0 whatever happened.
FORK_LOOP = """
import os, time
refused = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    except OSError:
        refused += 1
print("forks refused:", refused, flush=True)
"""
# Touches 300 MiB page by page, then exits 0 if it survived.
MEMORY_HOG = "data = b'x' * (300 << 20); print('allocated', len(data))"


def _task_groups(host: cgroups.CgroupHost) -> list[Path]:
    parents = [p for p in [host.v2, *host.v1.values()] if p is not None]
    return [child for parent in parents for child in parent.iterdir() if child.is_dir()]


def _assert_next_task_runs(submitter: Submitter, worker) -> None:
    follow_up = submitter.create({"command": [["echo", "next-task-fine"]], "maxRunTime": 60})
    run = submitter.wait_run(follow_up, timeout=60, worker=worker)
    assert run["state"] == "completed", (run, submitter.log(follow_up)[-2000:])
    assert "next-task-fine" in submitter.log(follow_up)
    assert worker.running, worker.tail()


@pytest.mark.parametrize("engine", ["simple", "multiuser"])
def test_fork_loop_capped_by_task_max_processes_fails_the_task(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost, engine: str
) -> None:
    worker = start_worker(engine=engine, taskMaxProcesses=64, headlessTasks=True)
    task_id = submitter.create({"command": [["python3", "-c", FORK_LOOP]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=90, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "Exit Code: 0" in " ".join(log.split()), log[-3000:]  # the command itself said 0
    assert "task hit taskMaxProcesses=64 (pids.max):" in log and "forks refused" in log, log[-3000:]
    refused = int(log.rsplit("forks refused: ", 1)[1].split()[0])
    assert refused > 100, log[-3000:]  # 200 tries, at most 64 processes
    assert "per-task cgroups:" in worker.output(), worker.tail()
    _assert_next_task_runs(submitter, worker)


@pytest.mark.parametrize("engine", ["simple", "multiuser"])
def test_memory_hog_capped_by_task_max_memory_is_oom_killed_and_fails(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost, engine: str
) -> None:
    worker = start_worker(engine=engine, taskMaxMemoryMegabytes=64, headlessTasks=True)
    task_id = submitter.create({"command": [["python3", "-c", MEMORY_HOG]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=90, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "task was OOM-killed: taskMaxMemoryMegabytes=64" in log, log[-3000:]
    assert f"allocated {300 << 20}" not in log, log[-3000:]  # it never got its memory
    _assert_next_task_runs(submitter, worker)


def test_oom_in_a_child_fails_the_task_even_when_the_command_exits_0(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost
) -> None:
    worker = start_worker(taskMaxMemoryMegabytes=64)
    script = f"python3 -c \"{MEMORY_HOG}\" || echo hog-died; exit 0"
    task_id = submitter.create({"command": [["sh", "-c", script]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=90, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "failed", (run, log[-3000:])
    assert "hog-died" in log and "task was OOM-killed: taskMaxMemoryMegabytes=64" in log, log[-3000:]


def test_task_within_its_limits_completes(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost
) -> None:
    worker = start_worker(taskMaxProcesses=64, taskMaxMemoryMegabytes=256)
    script = "for i in 1 2 3 4 5; do sleep 0.1 & done; wait; grep -E 'pids|memory|^0::' /proc/self/cgroup"
    task_id = submitter.create({"command": [["sh", "-c", script]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=60, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    assert "/tcworker/task_" in log and f"-w{worker.pid}" in log, log[-3000:]  # ran in its group
    ran_in = {m.group(1) for m in re.finditer(rf"/tcworker/(task_[^/\s]+-w{worker.pid})", log)}
    assert len(ran_in) == 1, log[-3000:]  # one group, the same in every hierarchy
    # The run's groups are gone once it is resolved (the task is reported after its clean-up);
    # what the worker keeps are the next runs' groups, made ready ahead (``LaunchPool``), empty
    # but for the one stub waiting in each.
    assert eventually(lambda: not [g for g in _task_groups(cgroup_host) if g.name in ran_in], 10)
    ready = {g.name for g in _task_groups(cgroup_host) if f"-w{worker.pid}" in g.name}
    assert all(name.startswith("task_ready_") for name in ready), ready
    for group in cgroup_host.parents():
        for name in ready:
            procs = (group / name / "cgroup.procs").read_text().split()
            assert len(procs) <= 1, (name, procs)


def test_groups_left_by_a_dead_worker_are_killed_and_removed_at_start(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost
) -> None:
    """A crashed worker leaves its tasks' groups, maybe with processes: the next worker's start
    kills them and removes the groups (groups of live workers are left alone)."""
    dead_pid = next(p for p in range(4_000_000, 4_100_000) if not os.path.exists(f"/proc/{p}"))
    name = cgroups.group_name("task_stale_0").replace(f"-w{os.getpid()}", f"-w{dead_pid}")
    live_name = cgroups.group_name("task_live_0")  # ours: this test process is alive
    stale = cgroup_host.create(name, cgroups.TaskLimits(64, 64 << 20))
    live = cgroup_host.create(live_name, cgroups.TaskLimits(64, 64 << 20))
    fds, join = stale.joiner()
    try:
        orphan = subprocess.Popen(["sleep", "600"], preexec_fn=join, start_new_session=True)
    finally:
        for fd in fds:
            os.close(fd)
    try:
        assert stale.pids() == [orphan.pid]
        worker = start_worker()
        assert eventually(lambda: orphan.poll() is not None, 30), worker.tail()
        assert eventually(lambda: "removed cgroups left by a worker that is gone" in worker.output(), 10)
        assert name in worker.output()
        assert not [g for g in _task_groups(cgroup_host) if g.name == name]
        assert [g for g in _task_groups(cgroup_host) if g.name == live_name]
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()
        live.remove()
        stale.remove()


def _fd_targets(pid: int) -> list[str]:
    targets = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets




def test_cancel_kills_a_child_that_left_everything_but_the_cgroup(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost
) -> None:
    """Double fork, ``setsid``, ``env -i`` and its output closed: no process tree scan can tie
    it to the task any more (no ancestry, session, marker variable or pipe); the cgroup does."""
    worker = start_worker()  # default settings
    tag = f"600.{random.randrange(10**6, 10**7)}"
    script = (
        f"( setsid env -i /bin/sh -c 'exec sleep {tag}' </dev/null >/dev/null 2>&1 & ) ; "
        "echo escaped-started; sleep 600"
    )
    task_id = submitter.create({"command": [["sh", "-c", script]], "maxRunTime": 900})
    submitter.wait_running(task_id, worker=worker)
    try:
        assert eventually(lambda: bool(processes_with_arg(tag)), 30), "the escaping child never started"
        (escaped,) = processes_with_arg(tag)
        assert escaped.ppid() != worker.pid and "E2E_MARK" not in "".join(escaped.environ())
        assert escaped.ppid() != worker.pid
        assert not [fd for fd in _fd_targets(escaped.pid) if fd.startswith("pipe:")]  # output closed too
        submitter.queue.cancelTask(task_id)
        cancelled_at = time.monotonic()
        gone = eventually(lambda: not processes_with_arg(tag), 5.0)
        assert gone, f"the escaped child is still there {time.monotonic() - cancelled_at:.1f}s after the cancel"
    finally:
        for proc in processes_with_arg(tag):  # never leave a stray sleep behind a failed test
            proc.kill()
    run = submitter.wait_run(task_id, timeout=10)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "canceled"), run
    assert worker.running, worker.tail()


def test_a_runs_first_command_gets_the_same_open_file_limit_as_the_others(
    submitter: Submitter, start_worker, cgroup_host: cgroups.CgroupHost
) -> None:
    """The worker raises its soft RLIMIT_NOFILE at start (taskcluster-proxy's feature set-up);
    a run's first command starts through a stub parked when the engine started, so it must
    already have been parked with the raised limit, like every later command."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        skip_or_fail(f"this test needs a finite hard RLIMIT_NOFILE above 1024 (hard {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the worker
    try:
        worker = start_worker(engine="simple")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    script = 'echo "nofile $(ulimit -Sn)"'
    task_id = submitter.create({"command": [["sh", "-c", script], ["sh", "-c", script]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, timeout=60, worker=worker)
    log = submitter.log(task_id)
    assert run["state"] == "completed", (run, log[-3000:])
    limits = re.findall(r"^nofile (\d+)$", log, re.M)
    assert limits == [str(hard), str(hard)], log[-3000:]
