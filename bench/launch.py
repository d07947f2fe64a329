#!/usr/bin/env python3
"""A run's first command through its parked stub: ``CommandRunner.run(["true"])`` as a worker runs
it, beside a bare ``subprocess.run(["true"])`` in the same run, and what ``LaunchPool.top_up``
costs after each run.

Each round does what the worker does for one run: the pool makes a ready ``(cgroup, parked stub)``
pair (``top_up``, timed: wall and the worker's own CPU), the process then waits ``--gap`` seconds
(a worker waiting for its next task; the stub has long joined its group by then), a real
``CommandRunner`` with that cgroup and stub runs ``true`` (timed), and the group is removed as
``destroy`` removes it. The bare ``subprocess.run(["true"])`` runs in the same round, so the
machine's load hits both alike. ``--loop uvloop`` runs it on uvloop's event loop. Prints median
and p90 wall, the worker's CPU per command (its own, not the child's) and the load. Needs root
and a host with cgroups; otherwise it says why and exits 2.
Run: ``python bench/launch.py [-n 200] [--gap 0.05] [--loop asyncio|uvloop]``.
"""

# ruff: noqa: E402 (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# `python bench/launch.py` puts bench/ first on sys.path; the standard library must win.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable

from tcworker.engines import cgroups, spawnstub
from tcworker.engines.launchpool import LaunchPool
from tcworker.engines.process import PIPE_SIZE, CommandRunner

# What the simple engine gives a command: the worker's environment (dozens of entries) and the
# run's variables; encoding it is on the command's path.
ENV = {
    **{k: v for k, v in os.environ.items() if k != "TASKCLUSTER_ACCESS_TOKEN"},
    "TASK_ID": "bench-launch-task",
    "RUN_ID": "0",
    "TASK_WORKDIR": "/",
}


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Series:
    """Wall and own-CPU seconds of one measured step, one entry per round."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    def row(self) -> str:
        ws = sorted(self.wall)
        p90 = ws[int(0.9 * (len(ws) - 1))]
        return (
            f"{self.label:<46} {statistics.median(ws) * 1000:>9.3f} {p90 * 1000:>9.3f} "
            f"{statistics.median(self.cpu) * 1000:>9.3f} {statistics.mean(self.cpu) * 1000:>9.3f}"
        )


def _timed(series: Series, step: Callable[[], object]) -> object:
    c0, t0 = _cpu(), time.perf_counter()
    result = step()
    series.add(time.perf_counter() - t0, _cpu() - c0)
    return result


async def _wait_joined(group: cgroups.TaskCgroup, stub: spawnstub.StubLaunch) -> None:
    """Until the parked stub is in its group (it joins in the child, after its perl start-up)."""
    procs = group.dirs[0] / "cgroup.procs"
    for _ in range(1000):
        if str(stub.popen.pid) in procs.read_text().split():
            return
        await asyncio.sleep(0.005)
    raise SystemExit("a parked stub never joined its cgroup")


async def main(n: int, gap: float) -> int:
    if os.geteuid() != 0:
        print("skipped: per-task cgroups need root")
        return 2
    host = cgroups.detect()
    if host is None:
        print("skipped: this host offers no usable cgroups")
        return 2
    if not spawnstub.launch_available():
        print("skipped: the launch stub cannot be used here (perl or system call numbers)")
        return 2
    pool = LaunchPool(host, cgroups.TaskLimits(256, 256 << 20), 1, PIPE_SIZE)
    bare, parked, top_up, remove = (
        Series("bare subprocess.run(['true'])"),
        Series("CommandRunner.run(['true']), parked stub"),
        Series("LaunchPool.top_up (cgroup + parked stub)"),
        Series("removing the run's empty cgroup"),
    )
    loads = [os.getloadavg()[0]]
    for _ in range(2):  # warm-up: first imports, first stubs
        subprocess.run(["true"], check=True)  # noqa: ASYNC221 (the blocking baseline itself)
    for i in range(n):
        _timed(top_up, pool.top_up)
        ready = pool.take()
        if ready is None:
            raise SystemExit("the launch pool made no ready pair (see the warning above)")
        group, stub = ready
        await _wait_joined(group, stub)
        await asyncio.sleep(gap)
        _timed(bare, lambda: subprocess.run(["true"], check=True))  # noqa: PLW0640
        runner = CommandRunner(cgroup=group, parked=stub)
        c0, t0 = _cpu(), time.perf_counter()
        result = await runner.run(["true"], ENV, "/", _Discard())
        parked.add(time.perf_counter() - t0, _cpu() - c0)
        if result.exit_code != 0 or result.start_error:
            raise SystemExit(f"`true` failed: {result}")
        if not _timed(remove, group.remove_if_empty):
            group.remove()
        if i % 50 == 49:
            loads.append(os.getloadavg()[0])
    await pool.close()
    loads.append(os.getloadavg()[0])
    print(host.describe())
    print(
        f"event loop: {type(asyncio.get_running_loop()).__module__}; gap before each command {gap * 1000:.0f} ms"
    )
    print(f"load average (1 min) during the run: {min(loads):.2f}–{max(loads):.2f}")
    print(
        f"{'per run, n=' + str(n):<46} {'wall med':>9} {'wall p90':>9} {'CPU med':>9} {'CPU mean':>9}  (ms)"
    )
    for series in (bare, parked, top_up, remove):
        print(series.row())
    over = statistics.median(parked.wall) - statistics.median(bare.wall)
    print(f"parked-stub command over the bare one, median wall: {over * 1000:.3f} ms")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="rounds")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds idle before each command")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            sys.exit(runner.run(main(args.n, args.gap)))
    sys.exit(asyncio.run(main(args.n, args.gap)))
