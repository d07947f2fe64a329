#!/usr/bin/env python3
"""Benchmark taskcluster-proxy's added latency: ``queue.task()`` through the proxy vs direct.

Issue 10 acceptance 4 (goal: ≤ 1 ms added at the median). The proxy is measured as a task gets
it: a real ``tcworker queue serve`` process and a real ``tcworker run`` worker (simple engine,
capacity 1) running a task with ``features.taskclusterProxy: true`` (a ``sleep``), so the proxy
is the one the worker serves from its own event loop at ``taskclusterProxyPort`` (the simple
engine lets any local process connect, so this script stands in for the task's client). The
official ``taskcluster.aio`` client calls ``queue.task(taskId)`` alternately

- direct: rootUrl = the platform, signed with temporary credentials made from the root
  credentials for the task's scopes (what the run's own credentials are: a certificate the
  platform checks; the baseline);
- proxied: rootUrl = the proxy, no credentials (what a task does); the worker signs and forwards
  with the run's credentials and ``authorizedScopes``.

Calls alternate so both see the same machine load. Beside the latencies: the worker process's
CPU time per proxied call (its CPU over the measured loop, less what it used in an equally long
idle stretch with the same task running), and the load average. Run:
``python bench/proxy.py [--calls N] [--repeat R]``.
"""

from __future__ import annotations

import benchsetup  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import asyncio
import datetime as dt
import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import slugid
import taskcluster
import taskcluster.aio

bw = benchsetup.bench_worker()

SCOPES = ["queue:get-artifact:private/*"]
WARM_UP_CALLS = 30


@dataclass
class Figures:
    direct: list[float]
    proxied: list[float]
    worker_cpu_ms_per_call: float
    worker_idle_cpu_ms_per_call: float
    load: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_proxy_task(queue: taskcluster.Queue, worker_type: str) -> str:
    task_id = slugid.nice()
    payload = {"command": [["sleep", "900"]], "maxRunTime": 1200, "features": {"taskclusterProxy": True}}
    queue.createTask(task_id, bw.task_definition(worker_type, payload, SCOPES))
    return task_id


def wait_for_proxy(proxy_url: str, task_id: str, worker: Any, timeout: float = 60) -> None:
    """Until the run's proxy answers ``queue.task`` (the task is running, the proxy listening)."""
    queue = taskcluster.Queue({"rootUrl": proxy_url, "maxRetries": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise SystemExit(f"worker exited {worker.proc.returncode}:\n{worker.tail()}")
        try:
            queue.task(task_id)
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"the task's proxy did not answer within {timeout:.0f} s:\n{worker.tail()}")


def temporary_credentials(token: str) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return dict(
        taskcluster.createTemporaryCredentials(
            "static/taskcluster/root",
            token,
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(hours=1),
            SCOPES,
        )
    )


async def measure(
    root_url: str, proxy_url: str, task_id: str, creds: dict[str, Any], calls: int, worker_pid: int
) -> Figures:
    worker = psutil.Process(worker_pid)

    def cpu() -> float:
        t = worker.cpu_times()
        return float(t.user + t.system)

    async with aiohttp.ClientSession() as session:
        direct = taskcluster.aio.Queue({"rootUrl": root_url, "credentials": creds}, session=session)
        proxied = taskcluster.aio.Queue({"rootUrl": proxy_url}, session=session)
        for _ in range(WARM_UP_CALLS):  # connections, caches
            await direct.task(task_id)
            await proxied.task(task_id)
        out: dict[str, list[float]] = {"direct": [], "proxy": []}
        cpu_before, wall_before = cpu(), time.monotonic()
        for i in range(calls):
            order = [("direct", direct), ("proxy", proxied)]
            if i % 2 == 0:
                order.reverse()
            for name, client in order:
                t0 = time.perf_counter()
                await client.task(task_id)
                out[name].append((time.perf_counter() - t0) * 1000)
        busy_cpu, busy_wall = cpu() - cpu_before, time.monotonic() - wall_before
        load = os.getloadavg()[0]
    # What the worker spends anyway (reclaims, the task's log, the monitor) over as long a stretch.
    idle_before = cpu()
    await asyncio.sleep(busy_wall)
    idle_cpu = cpu() - idle_before
    return Figures(
        out["direct"],
        out["proxy"],
        (busy_cpu - idle_cpu) * 1000 / calls,
        idle_cpu * 1000 / calls,
        load,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(figures: Figures, calls: int) -> float:
    print(f"queue.task() x {calls} each, alternating, official taskcluster.aio client")
    print(f"{'path':<28}{'median':>10}{'p90':>10}{'p99':>10}")
    for name, values in (("direct (baseline)", figures.direct), ("through the proxy", figures.proxied)):
        print(
            f"{name:<28}{statistics.median(values):>8.3f}ms{pct(values, 0.9):>8.3f}ms"
            f"{pct(values, 0.99):>8.3f}ms"
        )
    added = statistics.median(figures.proxied) - statistics.median(figures.direct)
    print(
        f"added by the proxy at the median: {added:.3f} ms "
        f"(goal <= 1 ms: {'met' if added <= 1.0 else 'NOT met'})"
    )
    print(
        f"worker process CPU time per proxied call (user+system, its idle share taken off): "
        f"{figures.worker_cpu_ms_per_call:.3f} ms (idle share {figures.worker_idle_cpu_ms_per_call:.3f} ms)"
    )
    print(f"machine load average during the run: {figures.load:.1f} on {os.cpu_count()} CPUs")
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per path per repeat")
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times in the run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        procs: list[Any] = []
        try:
            platform = bw.Platform(Path(tmp, "platform"))
            procs.append(platform.proc)
            key = Path(tmp, "ed25519.key")
            bw.new_worker_key(key)
            port = free_port()
            worker_type = bw.new_type()
            worker = bw.Worker(
                Path(tmp, "worker"), platform, key, workerType=worker_type, taskclusterProxyPort=port
            )
            procs.append(worker)
            task_id = create_proxy_task(platform.queue, worker_type)
            proxy_url = f"http://127.0.0.1:{port}"
            wait_for_proxy(proxy_url, task_id, worker)
            creds = temporary_credentials(platform.token)
            added = []
            for _ in range(args.repeat):
                figures = asyncio.run(
                    measure(platform.root_url, proxy_url, task_id, creds, args.calls, worker.proc.pid)
                )
                added.append(report(figures, args.calls))
            if len(added) > 1:
                print("added at the median, each repeat: " + ", ".join(f"{a:.3f} ms" for a in added))
            platform.queue.cancelTask(task_id)
        finally:
            bw.stop_all(procs)


if __name__ == "__main__":
    main()
