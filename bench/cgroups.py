#!/usr/bin/env python3
"""What a per-task cgroup costs each command: ``CommandRunner.run(["true"])`` with and without.

With a cgroup the child joins it between fork and exec (``preexec_fn``), which makes CPython fork
instead of vfork, and the group is killed after each command. This prints the wall time per
command (median, p90) and the worker's CPU time per command for both, interleaved in one run
(the baseline is the same runner without a cgroup), plus the machine load. Root and a host with
cgroups are needed; otherwise it says why and exits 2. Run: ``python bench/cgroups.py [-n 200]``.
"""

from __future__ import annotations

import benchsetup  # noqa: F401  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time

from tcworker.engines import cgroups
from tcworker.engines.process import CommandRunner


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _cpu() -> float:
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    return self_usage.ru_utime + self_usage.ru_stime


async def _one(runner: CommandRunner, wall: list[float], cpu: list[float]) -> None:
    c0, t0 = _cpu(), time.perf_counter()
    result = await runner.run(["true"], {"PATH": "/usr/bin:/bin"}, "/", _Discard())
    wall.append(time.perf_counter() - t0)
    cpu.append(_cpu() - c0)
    if result.exit_code != 0:
        raise SystemExit(f"`true` failed: {result}")


async def main(n: int) -> int:
    if os.geteuid() != 0:
        print("skipped: per-task cgroups need root")
        return 2
    host = cgroups.detect()
    if host is None:
        print("skipped: this host offers no usable cgroups")
        return 2
    group = host.create(cgroups.group_name("bench_cgroups"), cgroups.TaskLimits(256, 256 << 20))
    try:
        with_group, without = CommandRunner(cgroup=group), CommandRunner()
        wall = {"cgroup": [], "none": []}
        cpu = {"cgroup": [], "none": []}
        for _ in range(n):  # interleaved, so load changes hit both alike
            await _one(with_group, wall["cgroup"], cpu["cgroup"])
            await _one(without, wall["none"], cpu["none"])
    finally:
        group.remove()
    print(host.describe())
    print(f"load average: {os.getloadavg()}")
    print(f"{'per command (`true`, n=' + str(n) + ')':<40} {'median ms':>10} {'p90 ms':>10} {'CPU ms':>10}")
    for name, label in (("none", "baseline: no cgroup"), ("cgroup", "in the task's cgroup")):
        ws = sorted(wall[name])
        p90 = ws[int(0.9 * (len(ws) - 1))]
        print(
            f"{label:<40} {statistics.median(ws) * 1000:>10.2f} {p90 * 1000:>10.2f} "
            f"{statistics.mean(cpu[name]) * 1000:>10.2f}"
        )
    ratio = statistics.mean(cpu["cgroup"]) / max(statistics.mean(cpu["none"]), 1e-9)
    print(f"worker CPU time per command, cgroup / baseline: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="commands per variant")
    sys.exit(asyncio.run(main(parser.parse_args().n)))
