#!/usr/bin/env python3
"""Benchmark taskcluster-proxy's added latency: ``queue.task()`` through the proxy vs direct.

Issue 10 acceptance 4 (goal: ≤ 1 ms added at the median). In one run, against a real
``tcworker queue serve`` process: a task is created and claimed (its temporary credentials are what
the worker's proxy signs with), then the proxy — the worker's own code, ``tcworker.proxy`` — runs
in a separate process as it runs in the worker's event loop, and the official ``taskcluster.aio``
client calls ``queue.task(taskId)`` alternately

- direct: rootUrl = the platform, signed with the run's temporary credentials (the baseline);
- proxied: rootUrl = the proxy, no credentials (what a task does); the proxy signs and forwards.

Calls alternate so both see the same machine load. Run: ``python bench/proxy.py [--calls N]``.
"""

# ruff: noqa: E402 (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from typing import Any

import aiohttp
import psutil
import slugid
import taskcluster
import taskcluster.aio


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


async def serve_proxy() -> None:
    """Child mode: read {rootUrl, credentials, scopes} from stdin, serve, print the port."""
    from tcworker.proxy.peers import PeerPolicy
    from tcworker.proxy.server import ProxyServer, TaskclusterRoutes, new_upstream_session
    from tcworker.proxy.signing import ProxyCredentials, RequestSigner

    spec = json.loads(sys.stdin.readline())
    signer = RequestSigner(ProxyCredentials.from_taskcluster(spec["credentials"]), spec["scopes"])
    session = new_upstream_session()
    server = ProxyServer({"": TaskclusterRoutes(spec["rootUrl"], signer, session)}, PeerPolicy())
    await server.listen("127.0.0.1", 0)
    port = server._servers[0].sockets[0].getsockname()[1]
    print(f"proxy-port {port}", flush=True)
    await asyncio.Event().wait()


def start_platform(data_dir: str, token: str) -> tuple[subprocess.Popen[bytes], str]:
    log = open(os.path.join(data_dir, "platform.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tcworker",
            "queue",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            os.path.join(data_dir, "data"),
            # one argument: a token_urlsafe token may start with "-", which argparse takes for an option
            f"--root-access-token={token}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = Path(data_dir, "platform.log").read_text(errors="replace")
        m = re.search(r"rootUrl:\s*(http://127\.0\.0\.1:\d+)", text)
        if m:
            return proc, m.group(1)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("platform did not start:\n" + Path(data_dir, "platform.log").read_text())


def claim_task(root_url: str, token: str) -> tuple[str, dict[str, Any], list[str]]:
    queue = taskcluster.Queue(
        {"rootUrl": root_url, "credentials": {"clientId": "static/taskcluster/root", "accessToken": token}}
    )
    now = dt.datetime.now(dt.UTC)
    task_id = slugid.nice()
    scopes = ["queue:get-artifact:private/*"]
    queue.createTask(
        task_id,
        {
            "provisionerId": "bench-prov",
            "workerType": "bench-proxy",
            "schedulerId": "-",
            "created": _iso(now),
            "deadline": _iso(now + dt.timedelta(hours=1)),
            "expires": _iso(now + dt.timedelta(days=1)),
            "scopes": scopes,
            "payload": {},
            "metadata": {
                "name": "bench",
                "description": "bench/proxy.py",
                "owner": "bench@example.com",
                "source": "https://example.com",
            },
        },
    )
    claim = queue.claimWork("bench-prov/bench-proxy", {"workerGroup": "g", "workerId": "w", "tasks": 1})
    (run,) = claim["tasks"]
    return task_id, run["credentials"], [*scopes, f"queue:create-artifact:{task_id}/0"]


async def measure(
    root_url: str, proxy_url: str, task_id: str, creds: dict[str, Any], calls: int
) -> dict[str, list[float]]:
    async with aiohttp.ClientSession() as session:
        direct = taskcluster.aio.Queue({"rootUrl": root_url, "credentials": creds}, session=session)
        proxied = taskcluster.aio.Queue({"rootUrl": proxy_url}, session=session)
        for _ in range(30):  # warm-up: connections, caches
            await direct.task(task_id)
            await proxied.task(task_id)
        out: dict[str, list[float]] = {"direct": [], "proxy": []}
        for i in range(calls):
            order = (
                [("direct", direct), ("proxy", proxied)]
                if i % 2
                else [("proxy", proxied), ("direct", direct)]
            )
            for name, client in order:
                t0 = time.perf_counter()
                await client.task(task_id)
                out[name].append((time.perf_counter() - t0) * 1000)
        return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        asyncio.run(serve_proxy())
        return
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        platform, root_url = start_platform(tmp, token)
        proxy = None
        try:
            task_id, creds, scopes = claim_task(root_url, token)
            proxy = subprocess.Popen(
                [sys.executable, __file__, "--serve-proxy"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )
            assert proxy.stdin and proxy.stdout
            proxy.stdin.write(
                (json.dumps({"rootUrl": root_url, "credentials": creds, "scopes": scopes}) + "\n").encode()
            )
            proxy.stdin.flush()
            port = int(proxy.stdout.readline().split()[1])
            proxy_process = psutil.Process(proxy.pid)
            cpu_before = proxy_process.cpu_times()
            result = asyncio.run(measure(root_url, f"http://127.0.0.1:{port}", task_id, creds, args.calls))
            cpu_after = proxy_process.cpu_times()
            proxy_cpu_ms = (
                (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system)
                * 1000
                / (args.calls + 30)
            )
            load = os.getloadavg()[0]
        finally:
            for proc in (proxy, platform):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    direct, proxied = result["direct"], result["proxy"]
    print(f"queue.task() x {args.calls} each, alternating, official taskcluster.aio client")
    print(f"{'path':<28}{'median':>10}{'p90':>10}{'p99':>10}")
    for name, values in (("direct (baseline)", direct), ("through the proxy", proxied)):
        print(
            f"{name:<28}{statistics.median(values):>8.3f}ms{pct(values, 0.9):>8.3f}ms{pct(values, 0.99):>8.3f}ms"
        )
    added = statistics.median(proxied) - statistics.median(direct)
    print(
        f"added by the proxy at the median: {added:.3f} ms (goal <= 1 ms: {'met' if added <= 1.0 else 'NOT met'})"
    )
    print(f"proxy process CPU time per proxied call (user+system): {proxy_cpu_ms:.3f} ms")
    print(f"machine load average during the run: {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
