#!/usr/bin/env python3
"""The wire floor: trivial tasks/s that the queue protocol alone allows on this machine, beside a
real worker draining the same kind of tasks in the same run.

A trivial task costs a worker nine calls to the platform, in an order the protocol fixes:
``claimWork``; the live log's ``reference`` artifact (beside the command); the backing log's
``object`` ``createArtifact`` → ``createUpload`` → PUT → ``finishUpload`` → ``finishArtifact``
(the live log's ``link`` beside the upload); ``reportCompleted``. The floor makes exactly those
calls — the official ``taskcluster.aio`` clients with tcworker's client set-up
(``tcapi.clients``, ``tcapi.upload``: the same session, Hawk header and gzip upload), on uvloop
as ``tcworker run`` — with ``capacity`` slots in one process and nothing else: no command, no log
written, no sandbox, no features. It is what any worker speaking this protocol through this client
could reach against this platform here, so the worker's distance to it is the worker's own cost,
and a goal above it cannot be met by the worker alone (issue 15 item 2).

Both drains use the local platform (`tcworker queue serve`, a separate process) and tasks queued
before the drain starts; rates are first started → last resolved from the queue's own
timestamps, CPU per task from rusage/psutil. Floor and worker alternate ``--rounds`` times so
load drift hits both alike. Run: ``python bench/wire_floor.py [--tasks 300] [--rounds 2]``.
"""

from __future__ import annotations

import benchsetup  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import uvloop
from rich.console import Console
from rich.table import Table

from tcworker import tctime
from tcworker.tcapi.clients import Clients
from tcworker.tcapi.gzip_upload import LOG_LEVEL, compress
from tcworker.tcapi.upload import ArtifactPublisher

bw = benchsetup.bench_worker()

LIVE_LOG = "public/logs/live.log"
BACKING_LOG = "public/logs/live_backing.log"
LOG_TYPE = "text/plain; charset=utf-8"
# A trivial task's log is ~1.5 KB: the worker's header, the command line and its footer.
LOG_TEXT = "".join(f"[taskcluster 2026-01-01T00:00:00.000Z] header line {i:02d} " + "x" * 40 + "\n" for i in range(24))


async def _one_task(clients: Clients, claim: dict[str, Any], scratch: Path) -> None:
    """One claimed task, as a worker publishes a trivial run: the calls, nothing else."""
    task_id = claim["status"]["taskId"]
    run_id = int(claim["runId"])
    queue = clients.queue(claim["credentials"])
    publisher = ArtifactPublisher(clients, lambda: queue, task_id, run_id, scratch)
    expires = claim["task"]["expires"]
    await publisher.create_reference(LIVE_LOG, "http://127.0.0.1:1/log/unused", LOG_TYPE, expires)
    log_path = scratch / f"{task_id}.log"
    log_path.write_text(LOG_TEXT)
    packed = compress(log_path, scratch, LOG_LEVEL)  # inline, as the worker packs a short log
    created = await publisher.create_object(BACKING_LOG, LOG_TYPE, expires)
    await asyncio.gather(
        publisher.upload_file(BACKING_LOG, log_path, LOG_TYPE, expires, "gzip", packed=packed, created=created),
        publisher.create_link(LIVE_LOG, BACKING_LOG, LOG_TYPE, expires),
    )
    await queue.reportCompleted(task_id, str(run_id))
    log_path.unlink()
    if packed.path is not None:
        packed.path.unlink(missing_ok=True)


async def _drain(root_url: str, token: str, worker_type: str, capacity: int, n: int, scratch: Path) -> None:
    clients = Clients(root_url, {"clientId": "static/taskcluster/root", "accessToken": token})
    queue = clients.queue()
    claimed = 0

    async def slot(index: int) -> None:
        nonlocal claimed
        while claimed < n:
            claimed += 1
            body = {"workerGroup": "floor", "workerId": f"floor-{index}", "tasks": 1}
            answer = await queue.claimWork(f"{bw.PROVISIONER}/{worker_type}", body)
            for claim in answer["tasks"]:
                await _one_task(clients, claim, scratch)

    try:
        await asyncio.gather(*(slot(i) for i in range(capacity)))
    finally:
        await clients.close()


def floor(platform: Any, capacity: int, n: int, tmp: Path) -> tuple[float, float, float]:
    """(tasks/s, client CPU s per task, platform CPU s per task) of one drain at ``capacity``."""
    worker_type = bw.new_type()
    task_ids = [bw.create(platform.queue, worker_type, ["true"]) for _ in range(n)]
    scratch = Path(tempfile.mkdtemp(prefix="floor-", dir=tmp))
    platform_before = bw._cpu_seconds(platform.proc.pid)
    cpu_before = time.process_time()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(_drain(platform.root_url, platform.token, worker_type, capacity, n, scratch))
    finally:
        asyncio.set_event_loop_policy(None)
    client_cpu = time.process_time() - cpu_before
    platform_cpu = bw._cpu_seconds(platform.proc.pid) - platform_before
    shutil.rmtree(scratch, ignore_errors=True)
    span = bw.drain_span(platform.queue, task_ids, "floor tasks")
    return n / span, client_cpu / n, platform_cpu / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per drain (300)")
    parser.add_argument("--rounds", type=int, default=2, help="floor/worker alternations per capacity (2)")
    parser.add_argument("--capacities", default="1,8", help="comma-separated capacities (1,8)")
    parser.add_argument("--budget", type=float, default=400, help="overall time limit in seconds (400)")
    args = parser.parse_args()
    console = Console()
    budget = bw.Budget(args.budget)
    with bw.workspace() as tmp:
        key = tmp / "worker-key"
        bw.new_worker_key(key)
        with bw.Platform(tmp / "platform") as platform:
            console.print(f"platform at {platform.root_url}; {psutil.cpu_count()} CPUs; {args.tasks} tasks per drain")
            table = Table(title="trivial tasks/s: the protocol's calls alone vs a real worker (same run, alternating)")
            for col in ("capacity", "wire floor", "worker", "worker / floor"):
                table.add_column(col)
            for capacity in (int(c) for c in args.capacities.split(",")):
                floors: list[tuple[float, float, float]] = []
                workers: list[tuple[float, float, float]] = []
                for _ in range(args.rounds):
                    if budget.left() < 60:
                        break
                    floors.append(floor(platform, capacity, args.tasks, tmp))
                    rate, _, worker_cpu, platform_cpu = bw.throughput(
                        platform, tmp, key, capacity, args.tasks, budget, None
                    )
                    workers.append((rate, worker_cpu / args.tasks, platform_cpu / args.tasks))
                if not floors or not workers:
                    break
                f_rate = statistics.median(f[0] for f in floors)
                w_rate = statistics.median(w[0] for w in workers)
                table.add_row(
                    str(capacity),
                    f"{' / '.join(f'{f[0]:.1f}' for f in floors)} tasks/s (client CPU "
                    f"{statistics.median(f[1] for f in floors) * 1000:.1f} ms, platform "
                    f"{statistics.median(f[2] for f in floors) * 1000:.1f} ms per task)",
                    f"{' / '.join(f'{w[0]:.1f}' for w in workers)} tasks/s (worker CPU "
                    f"{statistics.median(w[1] for w in workers) * 1000:.1f} ms incl. start-up and `true`, "
                    f"platform {statistics.median(w[2] for w in workers) * 1000:.1f} ms per task)",
                    f"{w_rate / f_rate:.0%}",
                )
            console.print(table)
            console.print(
                "Wire floor: claimWork, the live log's reference, the backing log's createArtifact → "
                "createUpload → PUT → finishUpload → finishArtifact (with the link beside the upload), "
                "reportCompleted — the official client with tcworker's client set-up on uvloop, "
                f"`capacity` slots in one process, nothing run. {tctime.to_json(tctime.now())}; load "
                f"average at the end: {', '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
