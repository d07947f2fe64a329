#!/usr/bin/env python3
"""What signing costs per task: the same task with and without ``features.chainOfTrust``.

A real platform process and a real multiuser worker (root needed; the docker engine otherwise),
tasks submitted with the official client, interleaved so load drift hits both alike. The task
writes a 1 MiB artifact; with chainOfTrust the worker also copies and uploads the certified log,
signs and uploads the certificate, its signature and the SLSA provenance. Figures: createTask →
resolved (the platform's own timestamp), median and p90 of each, and their difference; then
``tcworker verify`` on one signed task. Run: ``python bench/chain_of_trust.py [--runs N]``.
"""

from __future__ import annotations

import benchsetup  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)


import argparse
import os
import statistics
import subprocess
import time
from typing import Any

import slugid
from rich.table import Table

bw = benchsetup.bench_worker()

SCRIPT = "head -c 1048576 /dev/urandom > out.bin"


def create(queue: Any, worker_type: str, cot: bool) -> str:
    task_id = slugid.nice()
    payload: dict[str, Any] = {
        "command": [["sh", "-c", SCRIPT]],
        "maxRunTime": 120,
        "artifacts": [{"type": "file", "path": "out.bin", "name": "public/out.bin"}],
    }
    if cot:
        payload["features"] = {"chainOfTrust": True}
    queue.createTask(task_id, bw.task_definition(worker_type, payload))
    return task_id


def one(queue: Any, worker_type: str, cot: bool) -> tuple[str, float]:
    t0 = time.time()
    task_id = create(queue, worker_type, cot)
    run = bw.wait_resolved(queue, task_id, timeout=60)
    if run["state"] != "completed":
        raise RuntimeError(f"task {task_id} resolved {run['state']}/{run.get('reasonResolved')}")
    return task_id, bw._parse(run["resolved"]) - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    engine = "multiuser" if os.geteuid() == 0 else "docker"
    procs: list[Any] = []
    with bw.workspace() as tmp:
        try:
            platform = bw.Platform(tmp / "platform")
            procs.append(platform.proc)
            key = tmp / "ed25519.key"
            public = bw.new_worker_key(key)
            homes = tmp / "homes"
            homes.mkdir()
            homes.chmod(0o755)
            wt = bw.new_type()
            extra = {"headlessTasks": True, "tasksDir": str(homes)} if engine == "multiuser" else {}
            worker = bw.Worker(tmp / "worker", platform, key, workerType=wt, engine=engine, **extra)
            procs.append(worker)
            one(platform.queue, wt, True)  # warm-up
            one(platform.queue, wt, False)
            with_cot: list[float] = []
            without: list[float] = []
            signed = ""
            for _ in range(args.runs):
                signed, t = one(platform.queue, wt, True)
                with_cot.append(t)
                without.append(one(platform.queue, wt, False)[1])
            t0 = time.perf_counter()
            verify = subprocess.run(
                bw._tcworker("verify", signed, "--root-url", platform.root_url, "--public-key", public),
                capture_output=True,
                text=True,
                env=bw._env(),
            )
            verify_s = time.perf_counter() - t0
        finally:
            bw.stop_all(procs)
    table = Table(title=f"chain of trust cost ({engine} engine, {args.runs} runs each, interleaved)")
    for col in ("measurement", "with chainOfTrust", "baseline (same task without)", "difference"):
        table.add_column(col)
    med_c, med_b = statistics.median(with_cot), statistics.median(without)
    table.add_row(
        "task with a 1 MiB artifact, createTask → resolved",
        f"median {bw.ms(med_c)}, p90 {bw.ms(bw.pct(with_cot, 0.9))}",
        f"median {bw.ms(med_b)}, p90 {bw.ms(bw.pct(without, 0.9))}",
        f"+{bw.ms(med_c - med_b)} per task",
    )
    table.add_row(
        "`tcworker verify` of one signed run (process start included)",
        f"{bw.ms(verify_s)} (exit {verify.returncode})",
        "",
        "",
    )
    bw.console.print(table)
    return 0 if verify.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
