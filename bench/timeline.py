#!/usr/bin/env python3
"""Where one trivial task's time goes at capacity 1: the worker's steps and queue calls on a timeline.

A real worker (`tcworker run`) drains queued trivial tasks (`true`) from a real local platform,
with timing wrappers put around the run's steps and around every call of the official client
(``_makeApiCall``) before the worker starts; each records (step, start, end) and the worker writes
them out when it exits. Per task the timeline is anchored at the answer of the ``claimWork`` that
brought it and ends at the next one's; for each step the table gives its median start in that
cycle and its median duration (steps of the previous task's clean-up show up where they overlap).

Beside it, in the same run, the same drain without the wrappers (tasks/s both ways), so the
wrappers' own cost is visible. Steps that no longer exist in the code are listed as missing
instead of failing. Run: ``python bench/timeline.py [--tasks 300]``.
"""

from __future__ import annotations

import benchsetup  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import collections
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

bw = benchsetup.bench_worker()

#: (module, qualified name) of every wrapped step; the client's calls are named by their API method.
STEPS = [
    ("taskcluster.aio.asyncclient", "AsyncBaseClient._makeApiCall"),
    ("tcworker.worker.loop", "WorkerLoop._start_run"),
    ("tcworker.worker.loop", "WorkerLoop._run_one"),
    ("tcworker.worker.loop", "WorkerLoop._ensure_disk_space"),
    ("tcworker.worker.loop", "WorkerLoop._claim"),
    ("tcworker.worker.taskrun", "TaskRun.run"),
    ("tcworker.worker.taskrun", "TaskRun._mask_credentials"),
    ("tcworker.worker.taskrun", "TaskRun._write_header"),
    ("tcworker.worker.taskrun", "TaskRun._run_pipeline"),
    ("tcworker.worker.taskrun", "TaskRun._write_footer"),
    ("tcworker.worker.taskrun", "TaskRun._publish_logs"),
    ("tcworker.worker.taskrun", "TaskRun._report"),
    ("tcworker.worker.tasklog", "TaskLog.__init__"),
    ("tcworker.worker.admission", "validate"),
    ("tcworker.worker.admission", "gate_features"),
    ("tcworker.worker.logpublish", "LogPublication._packed"),
    ("tcworker.engines.simple", "SimpleEngine.prepare"),
    ("tcworker.engines.simple", "SimpleSandbox.destroy"),
    ("tcworker.engines.process", "CommandRunner.run"),
    ("tcworker.engines.process", "CommandRunner._start"),
    ("tcworker.features.command_executor", "CommandExecutorTaskFeature.start"),
    ("tcworker.features.livelog", "LiveLogTaskFeature.start"),
    ("tcworker.features.livelog", "LiveLogTaskFeature.stop"),
    ("tcworker.features.livelog", "LiveLogTaskFeature._create_reference"),
    ("tcworker.features.livelog", "LiveLogTaskFeature._link"),
    ("tcworker.tcapi.upload", "upload_gzip"),  # looked up in the module that calls it
]

# The worker process runs this before `tcworker`'s own main (written next to the config).
HOOKS = '''
import atexit, functools, importlib, inspect, json, time

EVENTS = []
MISSING = []
clock = time.perf_counter


def _wrap(module, qualname):
    try:
        owner = importlib.import_module(module)
        *path, last = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, last)
    except (ImportError, AttributeError):
        MISSING.append(module + ":" + qualname)
        return
    api = qualname.endswith("_makeApiCall")
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def timed(*args, **kwargs):
            start = clock()
            try:
                return await fn(*args, **kwargs)
            finally:
                EVENTS.append(("call " + args[1]["name"] if api else qualname, start, clock()))
    else:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                EVENTS.append((qualname, start, clock()))
    setattr(owner, last, timed)


def install(steps, out):
    for module, qualname in steps:
        _wrap(module, qualname)

    def dump():
        with open(out, "w") as f:
            json.dump({"events": EVENTS, "missing": MISSING}, f)

    atexit.register(dump)
'''

LAUNCHER = """
import json, runpy, sys
sys.path.insert(0, {hooks_dir!r})
import tl_hooks
tl_hooks.install(json.loads({steps!r}), {out!r})
sys.argv = ["tcworker", "run", "--config", {config!r}]
runpy.run_module("tcworker", run_name="__main__", alter_sys=True)
"""


def drain(platform: Any, tmp: Path, key: Path, n: int, timed: bool) -> tuple[float, dict[str, Any] | None]:
    """(tasks/s, recorded steps or None): one capacity-1 worker drains ``n`` queued tasks."""
    worker_type = bw.new_type()
    task_ids = [bw.create(platform.queue, worker_type, ["true"]) for _ in range(n)]
    workdir = tmp / f"w-{worker_type}"
    config = bw.write_config(workdir, platform, key, workerType=worker_type, capacity=1, numberOfTasksToRun=n)
    out = workdir / "steps.json"
    argv = bw._tcworker("run", "--config", str(config))
    if timed:  # the same worker, started through a launcher that wraps the steps first
        (workdir / "tl_hooks.py").write_text(HOOKS)
        launcher = workdir / "launch.py"
        launcher.write_text(
            LAUNCHER.format(hooks_dir=str(workdir), steps=json.dumps(STEPS), out=str(out), config=str(config))
        )
        argv = [sys.executable, str(launcher)]
    log = workdir / "worker.log"
    with open(log, "wb") as sink:
        proc = subprocess.run(
            argv, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT, env=bw._env(), timeout=600, check=False
        )
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
    span = bw.drain_span(platform.queue, task_ids, "trivial tasks")
    return n / span, (json.loads(out.read_text()) if timed else None)


def timeline(events: list[list[Any]]) -> tuple[float, list[tuple[str, float, float, int]]]:
    """(median cycle s, [(step, median start s, median duration s, count)]) anchored at each
    claimWork's answer; a step seen k times in one cycle is listed as ``step #k``."""
    events = sorted(events, key=lambda e: e[1])
    claims = [e for e in events if e[0] == "call claimWork"]
    found: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    cycles = []
    for this, following in zip(claims[1:-1], claims[2:], strict=False):
        anchor, end = this[2], following[2]
        cycles.append(end - anchor)
        seen: collections.Counter[str] = collections.Counter()
        for name, start, stop in events:
            if anchor <= start < end:
                seen[name] += 1
                label = name if seen[name] == 1 else f"{name} #{seen[name]}"
                found[label].append((start - anchor, stop - start))
    rows = [
        (label, statistics.median(s for s, _ in spans), statistics.median(d for _, d in spans), len(spans))
        for label, spans in found.items()
        if len(spans) >= len(cycles) / 2
    ]
    return statistics.median(cycles), sorted(rows, key=lambda r: r[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per drain (300)")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    with bw.workspace() as tmp:
        key = tmp / "worker-key"
        bw.new_worker_key(key)
        with bw.Platform(tmp / "platform") as platform:
            plain, _ = drain(platform, tmp, key, args.tasks, timed=False)
            timed, recorded = drain(platform, tmp, key, args.tasks, timed=True)
            assert recorded is not None
            cycle, rows = timeline(recorded["events"])
            table = Table(title=f"one trivial task at capacity 1, from claimWork's answer (median cycle {cycle * 1000:.2f} ms)")
            for col in ("starts at", "takes", "step", "seen"):
                table.add_column(col, justify="right" if col != "step" else "left")
            for label, start, took, count in rows:
                table.add_row(f"{start * 1000:.2f} ms", f"{took * 1000:.2f} ms", label, str(count))
            console.print(table)
            console.print(
                f"tasks/s at capacity 1, {args.tasks} queued tasks: {plain:.1f} without the wrappers, "
                f"{timed:.1f} with them (same platform, one after the other)."
            )
            if recorded["missing"]:
                console.print(f"steps not found in this code (not timed): {', '.join(recorded['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
