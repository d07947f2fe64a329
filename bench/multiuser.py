#!/usr/bin/env python3
"""What the multiuser engine adds to a task's critical path, at the engine: ``prepare`` →
``execute(["true"])`` on multiuser vs simple, interleaved in one run.

The worker-level figure (``bench/worker.py --only multiuser``) is createTask → resolved, where the
platform, the HTTP calls and the load of a shared 2-core machine dwarf a few milliseconds. This
one times only what differs between the engines, in one process, with the same cgroups: the
sandbox's ``prepare`` (a pooled user vs two ``mkdir``), the command (multiuser: started through the
privilege-dropping stub, ``spawnstub.StubLaunch``) with its per-command sweep, and — off the
critical path, reported apart — ``destroy`` (``userdel`` and the files). A third column is
multiuser the way it started commands before (``subprocess`` with ``user=`` and a ``preexec_fn``,
which forks the process), measured in the same run as the baseline of the change.

Forking costs in proportion to the parent's memory, so the process first grows to the size of a
real worker (``--ballast-mb``, default 80: a ``tcworker run`` process's RSS on this machine) by
touching that much memory. Between runs it waits until the task user pool is full again and the
previous user is removed, so background ``useradd``/``userdel`` do not compete with the run being
timed. Needs root; otherwise it says why and exits 2. Run: ``python bench/multiuser.py [-n 40]``.
"""

from __future__ import annotations

import benchsetup  # noqa: F401  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcworker.config import from_mapping
from tcworker.engines import spawnstub
from tcworker.engines.base import Engine, RunContext
from tcworker.engines.multiuser import MultiuserEngine
from tcworker.engines.simple import SimpleEngine


class _Discard:
    def write(self, data: bytes) -> None:
        pass


class _Log:
    """The little of a task log ``prepare`` may use."""

    def info(self, message: str) -> None:
        pass

    warning = error = info


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Series:
    """Figures of one engine variant, one entry per run (seconds)."""

    name: str
    prepare: list[float] = field(default_factory=list)
    command: list[float] = field(default_factory=list)
    critical: list[float] = field(default_factory=list)
    cpu_self: list[float] = field(default_factory=list)
    cpu_children: list[float] = field(default_factory=list)
    destroy: list[float] = field(default_factory=list)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="tcw-bench-mu-", dir="/tmp"))
    os.chmod(root, 0o755)  # task users must traverse it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def config_for(root: Path, engine: str) -> Any:
    private = root / "worker"
    private.mkdir(mode=0o700, exist_ok=True)
    key = private / "ed25519.key"
    if not key.exists():
        key.write_bytes(base64.b64encode(secrets.token_bytes(32)))
        key.chmod(0o600)
    return from_mapping(
        {
            "engine": engine,
            "rootURL": "http://127.0.0.1:1",
            "clientId": "bench",
            "accessToken": "not-a-real-token",
            "workerType": "bench-multiuser",
            "workerId": "bench-multiuser-1",
            "provisionerId": "bench",
            "tasksDir": str(root / "tasks"),
            "ed25519SigningKeyLocation": str(key),
            "cleanUpTaskDirs": True,
        }
    )


def context(n: int) -> RunContext:
    task_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    return RunContext(
        task_id=task_id,
        run_id=n,
        task={"taskGroupId": task_id, "scopes": []},
        payload={"command": [["true"]], "maxRunTime": 60},
        payload_kind="generic",
        log=_Log(),  # type: ignore[arg-type]
    )


async def one_run(engine: Engine, series: Series, n: int) -> None:
    c0, k0, t0 = _cpu_self(), _cpu_children(), time.perf_counter()
    sandbox = await engine.prepare(context(n))
    t1 = time.perf_counter()
    env = {**sandbox.base_env(), "TASK_WORKDIR": str(sandbox.task_dir)}  # type: ignore[attr-defined]
    result = await sandbox.execute(["true"], env, _Discard())
    t2 = time.perf_counter()
    c1, k1 = _cpu_self(), _cpu_children()
    await sandbox.destroy()
    t3 = time.perf_counter()
    if result.exit_code != 0:
        raise SystemExit(f"{series.name}: `true` failed: {result}")
    series.prepare.append(t1 - t0)
    series.command.append(t2 - t1)
    series.critical.append(t2 - t0)
    series.cpu_self.append(c1 - c0)
    series.cpu_children.append(k1 - k0)
    series.destroy.append(t3 - t2)


async def settle(engine: Engine) -> None:
    """Wait until the pool (multiuser) is full again: nothing of the last run in the background."""
    pool = getattr(engine, "_pool", None)
    if pool is None:
        return
    deadline = time.monotonic() + 30
    while pool.ready_count < pool._size and time.monotonic() < deadline:  # noqa: SLF001
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)


def ms(values: list[float], q: float = 0.5) -> str:
    ordered = sorted(values)
    if q == 0.5:
        return f"{statistics.median(ordered) * 1000:6.2f}"
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:6.2f}"


async def main(runs: int, ballast_mb: int) -> int:
    if os.geteuid() != 0:
        print("skipped: the multiuser engine needs root (it creates a user per task)")
        return 2
    ballast = bytearray(ballast_mb << 20)
    for i in range(0, len(ballast), 4096):  # touch every page: a worker's resident memory
        ballast[i] = 1
    with scratch() as root:
        simple_root, multi_root = root / "simple", root / "multi"
        simple_root.mkdir(mode=0o755)
        multi_root.mkdir(mode=0o755)
        simple, multi = SimpleEngine(kill_grace=1.0), MultiuserEngine(kill_grace=1.0)
        await simple.initialise(config_for(simple_root, "simple"))
        await multi.initialise(config_for(multi_root, "multiuser"))
        stub_available = spawnstub.launch_available()
        variants = [Series("simple"), Series("multiuser"), Series("multiuser, forking (before)")]
        try:
            for n in range(runs + 1):  # run 0 warms up, not counted
                for series in variants:
                    engine: Engine = simple if series.name == "simple" else multi
                    forking = series.name.endswith("(before)")
                    if forking or not stub_available:
                        spawnstub.launch_available = lambda: False  # type: ignore[method-assign]
                    try:
                        await settle(engine)
                        scratch_series = Series(series.name)
                        await one_run(engine, scratch_series if n == 0 else series, n)
                    finally:
                        spawnstub.launch_available = lambda: stub_available  # type: ignore[method-assign]
        finally:
            await multi.shutdown()
            await simple.shutdown()
    del ballast
    load = os.getloadavg()
    print(
        f"engine path of a trivial task, {runs} interleaved runs per column; process RSS ballast "
        f"{ballast_mb} MiB; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{os.cpu_count()} CPUs; stub: {'yes' if stub_available else 'NOT AVAILABLE here'}"
    )
    header = f"{'':44}" + "".join(f"{s.name:>30}" for s in variants)
    print(header)
    rows = [
        ("prepare, median ms", lambda s: ms(s.prepare)),
        ("execute(['true']) incl. sweep, median ms", lambda s: ms(s.command)),
        ("critical path (prepare+execute), median ms", lambda s: ms(s.critical)),
        ("critical path, p90 ms", lambda s: ms(s.critical, 0.9)),
        ("worker's own CPU on it, median ms", lambda s: ms(s.cpu_self)),
        ("children's CPU on it (reaped), median ms", lambda s: ms(s.cpu_children)),
        ("destroy (after the report), median ms", lambda s: ms(s.destroy)),
    ]
    for label, cell in rows:
        print(f"{label:44}" + "".join(f"{cell(s):>30}" for s in variants))
    base = statistics.median(variants[0].critical)
    for s in variants[1:]:
        print(
            f"{s.name} over simple, critical path median: +{(statistics.median(s.critical) - base) * 1000:.2f} ms"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=40, help="runs per column (40)")
    parser.add_argument("--ballast-mb", type=int, default=80, help="process memory to touch first (80)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.ballast_mb)))
