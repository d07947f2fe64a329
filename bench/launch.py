#!/usr/bin/env python3
"""A run's first command through its parked stub: ``CommandRunner.run(["true"])`` as a worker runs
it, beside a bare ``subprocess.run(["true"])`` in the same run, and what ``LaunchPool.top_up``
costs after each run — with stubs cloned by the pool's forker and with stubs spawned each on
their own perl, alternating round by round.

Each round does what the worker does for one run: the pool makes a ready ``(cgroup, parked stub)``
pair (``top_up``, timed: wall and the worker's own CPU), the process then waits ``--gap`` seconds
(a worker waiting for its next task; the stub has long joined its group by then), a real
``CommandRunner`` with that cgroup and stub runs ``true`` (timed), and the group is removed as
``destroy`` removes it. The bare ``subprocess.run(["true"])`` runs in the same round, so the
machine's load hits all alike. ``--loop uvloop`` runs it on uvloop's event loop. Prints median
and p90 wall, the worker's own CPU per step, then the CPU each way of parking costs per run in
all processes: the worker's (``top_up`` and the command's path), the stub process's (its start
or clone, the cgroup join, then ``true`` itself) and the forker's — beside the bare ``true``'s
process. Needs root and a host with cgroups; otherwise it says why and exits 2.
Run: ``python bench/launch.py [-n 200] [--gap 0.05] [--loop asyncio|uvloop]``.
"""

from __future__ import annotations

import benchsetup  # noqa: F401  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def _children_cpu() -> float:
    """CPU of our reaped children (a stub or a bare ``true``, once ``wait4`` has it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """utime + stime of a living process (the forker, not reaped until the end)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


class Way:
    """One way of parking stubs: its pool and what each round costs."""

    def __init__(self, name: str, pool: LaunchPool) -> None:
        self.name = name
        self.pool = pool
        self.command = Series(f"CommandRunner.run(['true']), {name} stub")
        self.later = Series(f"  the run's second command, {name} stub")
        self.top_up = Series(f"LaunchPool.top_up, {name} stub")
        self.stub_cpu = 0.0  # the stub process's CPU, `true` included (all rounds)
        self.later_stub_cpu = 0.0
        self.forker_cpu = 0.0
        self.forker_cpu_later = 0.0

    async def round(self, gap: float, bare: Series, bare_cpu: list[float], remove: Series) -> None:
        forker = self.pool._forker  # noqa: SLF001 (its CPU is measured, nothing else)
        f0 = _process_cpu(forker.pid) if forker is not None else 0.0
        _timed(self.top_up, self.pool.top_up)
        if forker is not None:
            self.forker_cpu += _process_cpu(forker.pid) - f0
        ready = self.pool.take()
        if ready is None:
            raise SystemExit("the launch pool made no ready pair (see the warning above)")
        group, stub = ready
        await _wait_joined(group, stub)
        await asyncio.sleep(gap)
        k0 = _children_cpu()
        _timed(bare, lambda: subprocess.run(["true"], check=True))  # noqa: ASYNC221 (the baseline)
        bare_cpu.append(_children_cpu() - k0)
        # without the forker, a later command spawns its stub with the request in a memfd
        park = self.pool.park if forker is not None else None
        runner = CommandRunner(cgroup=group, parked=stub, park=park)
        for series, first in ((self.command, True), (self.later, False)):
            f0 = _process_cpu(forker.pid) if forker is not None else 0.0
            c0, k0, t0 = _cpu(), _children_cpu(), time.perf_counter()
            result = await runner.run(["true"], ENV, "/", _Discard())
            series.add(time.perf_counter() - t0, _cpu() - c0)
            if first:
                self.stub_cpu += _children_cpu() - k0
            else:
                self.later_stub_cpu += _children_cpu() - k0
                if forker is not None:
                    self.forker_cpu_later += _process_cpu(forker.pid) - f0
            if result.exit_code != 0 or result.start_error:
                raise SystemExit(f"`true` failed: {result}")
        if not _timed(remove, group.remove_if_empty):
            group.remove()


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
    limits = cgroups.TaskLimits(256, 256 << 20)
    ways = [
        Way("forked", LaunchPool(host, limits, 1, PIPE_SIZE)),
        Way("spawned", LaunchPool(host, limits, 1, PIPE_SIZE, forker=False)),
    ]
    bare, remove = Series("bare subprocess.run(['true'])"), Series("removing the run's empty cgroup")
    bare_cpu: list[float] = []
    loads = [os.getloadavg()[0]]
    for _ in range(2):  # warm-up: first imports, first stubs
        subprocess.run(["true"], check=True)  # noqa: ASYNC221 (the blocking baseline itself)
    for i in range(n):
        for way in ways if i % 2 else reversed(ways):
            await way.round(gap, bare, bare_cpu, remove)
        if i % 50 == 49:
            loads.append(os.getloadavg()[0])
    for way in ways:
        await way.pool.close()
    loads.append(os.getloadavg()[0])
    print(host.describe())
    print(
        f"event loop: {type(asyncio.get_running_loop()).__module__}; gap before each command {gap * 1000:.0f} ms"
    )
    print(f"load average (1 min) during the run: {min(loads):.2f}–{max(loads):.2f}")
    print(
        f"{'per run, n=' + str(n) + ' each way':<46} {'wall med':>9} {'wall p90':>9} {'CPU med':>9} {'CPU mean':>9}  (ms)"
    )
    for series in (bare, *(x for w in ways for x in (w.command, w.later)), *(w.top_up for w in ways), remove):
        print(series.row())
    for way in ways:
        over = statistics.median(way.command.wall) - statistics.median(bare.wall)
        print(f"{way.name} parked-stub command over the bare one, median wall: {over * 1000:.3f} ms")
    print("CPU per run in every process (ms, means): worker top_up + command path, stub process, forker")
    print(f"  bare `true`: its process {statistics.mean(bare_cpu) * 1000:.2f}")
    for way in ways:
        worker = statistics.mean(way.top_up.cpu) + statistics.mean(way.command.cpu)
        stub, forker = way.stub_cpu / n, way.forker_cpu / n
        print(
            f"  {way.name:>7}: worker {worker * 1000:.2f} + stub {stub * 1000:.2f} + forker {forker * 1000:.2f}"
            f" = {(worker + stub + forker) * 1000:.2f}"
        )
    print("CPU of the run's second command (ms, means): worker, stub process, forker")
    for way in ways:
        worker = statistics.mean(way.later.cpu)
        stub, forker = way.later_stub_cpu / n, way.forker_cpu_later / n
        print(
            f"  {way.name:>7}: worker {worker * 1000:.2f} + stub {stub * 1000:.2f} + forker {forker * 1000:.2f}"
            f" = {(worker + stub + forker) * 1000:.2f}"
        )
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
