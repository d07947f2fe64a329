#!/usr/bin/env python3
"""Benchmark the worker end to end, every figure measured side by side with its baseline in one run.

What it measures (issue 3 acceptance 3, issue 4 acceptance 2), against a real `tcworker queue serve`
process and real `tcworker run` processes, submitting with the official client:

1. end-to-end latency of a trivial task (`true`): createTask → run resolved, taken from the
   platform's own `resolved` timestamp (same host clock) so poll granularity does not count;
   baseline `subprocess.run(["true"])`;
2. trivial tasks per second at capacity 1 and capacity 8 (tasks queued first, then one worker
   drains them; span = first `started` → last `resolved`);
3. a task writing 1 GiB to stdout (log streamed to disk, gzip-uploaded) vs the same command
   redirected to a file through `subprocess`, with the CPU seconds of the worker process (its
   own, the task's processes excluded) and of the platform beside the redirect's (steadier than
   wall time on a shared machine);
4. worker RSS (worker process plus descendants) idle and while draining the capacity-8 queue;
5. per-task overhead of `engine: multiuser` vs `engine: simple` (root only; otherwise the row
   says why it is skipped): latency with both workers idle before each task, each worker's own
   CPU per task, and back to back (user creation and removal included);
6. live logs (issue 9): time to first log byte for a reader of `live.log` (run started → first
   byte, vs waiting for the backing log, the only way before live logs); line latency p50/p99
   (the task prints timestamped lines, a live reader notes their arrival; baseline: the same
   program read through a plain pipe); a live reader's throughput while a task writes 1 GiB
   (vs the task's own write rate).
7. cancel to processes gone (issue 14): `queue.cancelTask` of a running `sleep` on a worker with
   default settings → the task's process no longer exists (psutil, 10 ms polls), median and p99;
   beside it the same through the reclaim only (`statusPollIntervalSecs` 0, `reclaimIntervalSecs`
   1, the fastest a reclaim-only worker can be made) and a bare SIGTERM of a `sleep` (the floor).
8. the resource monitor's cost (issue 14): the trivial task and a 3 s `sleep` on a worker with
   the monitor on (the default) and on one with `enableResourceMonitor: false`, interleaved;
   createTask → resolved and the worker process's CPU time per task, side by side.

Bounded: a global budget (default 170 s) skips whatever would not fit, and every child process is
stopped on exit. Run: `python bench/worker.py` (`--quick` for a smoke run). The work dir (the
platform's data, the workers' tasksDir) is made under /tmp, or under `$TCWORKER_BENCH_DIR`; its
file system is printed first, as it moves the per-task figures (`tcworker.fsinfo`).
"""

from __future__ import annotations

import benchsetup  # noqa: F401  # isort: skip (first: takes bench/ off sys.path, as bench/queue.py would shadow `queue`)

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import requests
import slugid
import taskcluster
from rich.console import Console
from rich.table import Table

from tcworker.fsinfo import file_system_of

PROVISIONER = "bench-prov"
#: Where the bench makes its scratch directory (the platform's data, the workers' tasksDir):
#: the file system there moves the per-task figures (``tcworker.fsinfo``), so it is printed.
BENCH_DIR = os.environ.get("TCWORKER_BENCH_DIR", "/tmp")
RESOLVED = ("completed", "failed", "exception")
console = Console(width=None if sys.stdout.isatty() else 150)


class Budget:
    """Wall-clock budget for the whole run, so the benchmark always stops by itself."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- processes ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tcworker(*args: str) -> list[str]:
    return [sys.executable, "-m", "tcworker", *args]


def new_worker_key(path: Path) -> str:
    """A worker's ed25519 signing key written to ``path`` (mode 0600); returns its public key."""
    done = subprocess.run(
        _tcworker("new-ed25519-keypair", "--file", str(path)),
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    )
    path.chmod(0o600)
    return done.stdout


class Platform:
    """`tcworker queue serve` on 127.0.0.1:0; waits for its `rootUrl:` line."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        self.log = workdir / "platform.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                _tcworker("queue", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(workdir / "data"))
                + [f"--root-access-token={self.token}"],  # a token may start with "-"
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"rootUrl:\s*(http://\S+)", self.log.read_text("utf-8", "replace"))
            if match:
                self.root_url = match.group(1)
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"platform exited {self.proc.returncode}:\n{self.log.read_text()}")
            time.sleep(0.02)
        else:
            raise SystemExit("platform did not start within 30 s")
        self.queue = taskcluster.Queue(
            {
                "rootUrl": self.root_url,
                "credentials": {"clientId": "static/taskcluster/root", "accessToken": self.token},
            }
        )

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        """Stopped at the end of a with-block (the drains' scripts)."""
        self.proc.terminate()
        self.proc.wait(10)


def write_config(workdir: Path, platform: Platform, key: Path, **config: Any) -> Path:
    """A generic-worker config for one bench worker in ``workdir`` (created); returns its path."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = {
        "rootURL": platform.root_url,
        "clientId": "static/taskcluster/root",
        "accessToken": platform.token,
        "provisionerId": PROVISIONER,
        "workerGroup": "bench",
        "workerId": "bench-" + slugid.nice()[:10].replace("_", "x"),
        "tasksDir": str(workdir / "tasks"),
        "cachesDir": str(workdir / "caches"),
        "downloadsDir": str(workdir / "downloads"),
        "ed25519SigningKeyLocation": str(key),
        "requiredDiskSpaceMegabytes": 1,
        "engine": "simple",
        "capacity": 1,
        **config,
    }
    path = workdir / "config.json"
    path.write_text(json.dumps(conf))
    return path


class Worker:
    """One `tcworker run --config FILE` process with a generic-worker config."""

    def __init__(self, workdir: Path, platform: Platform, key: Path, **config: Any) -> None:
        self.workdir = workdir
        config_file = write_config(workdir, platform, key, **config)
        self.output = workdir / "worker.log"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                _tcworker("run", "--config", str(config_file)),
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
            )

    def check_alive(self) -> None:
        """Stop the bench at once, with the worker's own words, when it died at start-up (a broken
        install or config would otherwise show up as a task timing out a minute later)."""
        if self.proc.poll() is not None:
            tail = self.output.read_text(errors="replace")[-3000:]
            raise SystemExit(f"worker exited with status {self.proc.returncode} at start-up:\n{tail}")

    def tree_rss(self) -> int:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self) -> str:
        return self.output.read_text("utf-8", "replace")[-2000:]


def stop_all(procs: list[Any]) -> None:
    for proc in reversed(procs):
        if isinstance(proc, Worker):
            proc.stop()
        elif proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()


# -- tasks ----------------------------------------------------------------------------------


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _parse(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def task_definition(worker_type: str, payload: dict[str, Any], scopes: list[str] | None = None) -> dict[str, Any]:
    """A task for ``worker_type`` on the bench provisioner, due in an hour, no retries (the other
    bench scripts build theirs here too)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "provisionerId": PROVISIONER,
        "workerType": worker_type,
        "created": _iso(now),
        "deadline": _iso(now + dt.timedelta(hours=1)),
        "expires": _iso(now + dt.timedelta(days=1)),
        "retries": 0,
        "scopes": list(scopes or []),
        "payload": payload,
        "metadata": {
            "name": "bench",
            "description": "tcworker bench/",
            "owner": "bench@example.com",
            "source": "https://example.com/bench",
        },
    }


def create(queue: taskcluster.Queue, worker_type: str, command: list[str], max_run_time: int = 120) -> str:
    task_id = slugid.nice()
    queue.createTask(task_id, task_definition(worker_type, {"command": [command], "maxRunTime": max_run_time}))
    return task_id


def wait_resolved(
    queue: taskcluster.Queue, task_id: str, timeout: float, poll: float = 0.02
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = queue.status(task_id)["status"]["runs"]
        if runs and runs[-1]["state"] in RESOLVED:
            return dict(runs[-1])
        time.sleep(poll)
    raise TimeoutError(f"task {task_id} not resolved within {timeout:.0f}s")


def new_type() -> str:
    return "bench-" + secrets.token_hex(8)  # queue pattern ^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$


def latency_series(queue: taskcluster.Queue, worker_type: str, runs: int, budget: Budget) -> list[float]:
    """createTask → `resolved` (platform timestamp) for `runs` sequential trivial tasks, seconds."""
    out: list[float] = []
    for _ in range(runs):
        if budget.left() < 20:
            break
        t0 = time.time()
        task_id = create(queue, worker_type, ["true"])
        run = wait_resolved(queue, task_id, timeout=min(60, budget.left()))
        if run["state"] != "completed":
            raise RuntimeError(f"trivial task {task_id} resolved {run['state']}/{run.get('reasonResolved')}")
        out.append(_parse(run["resolved"]) - t0)
    return out


def baseline_true(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["true"], check=True)
        out.append(time.perf_counter() - t0)
    return out


def throughput(
    platform: Platform,
    tmp: Path,
    key: Path,
    capacity: int,
    n: int,
    budget: Budget,
    sample: Callable[[Worker], None] | None,
    **config: Any,
) -> tuple[float, float]:
    """(tasks/s, span s, worker CPU s, platform CPU s): queue n trivial tasks, then one worker
    with `capacity` drains them. CPU times hold under load, when wall times do not: the worker's
    (its start-up and the tasks' own processes included) from its rusage once reaped, the
    platform's from psutil over the drain."""
    worker_type = new_type()
    task_ids = [create(platform.queue, worker_type, ["true"]) for _ in range(n)]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    platform_before = _cpu_seconds(platform.proc.pid)
    worker = Worker(
        tmp / f"tp-{worker_type}",
        platform,
        key,
        workerType=worker_type,
        capacity=capacity,
        numberOfTasksToRun=n,
        **config,
    )
    stop = threading.Event()
    sampler = None
    if sample is not None:
        sampler = threading.Thread(target=lambda: _sample_loop(worker, stop, sample), daemon=True)
        sampler.start()
    try:
        worker.proc.wait(timeout=max(5, budget.left() - 15))
    except subprocess.TimeoutExpired:
        worker.stop()
        raise TimeoutError(f"capacity {capacity}: {n} tasks not drained within the budget") from None
    finally:
        stop.set()
        if sampler:
            sampler.join()
    platform_cpu = _cpu_seconds(platform.proc.pid) - platform_before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    worker_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    if worker.proc.returncode != 0:
        raise RuntimeError(f"worker exited {worker.proc.returncode}:\n{worker.tail()}")
    span = drain_span(platform.queue, task_ids, "tasks")
    return n / span, span, worker_cpu, platform_cpu


def drain_span(queue: taskcluster.Queue, task_ids: list[str], what: str) -> float:
    """First ``started`` → last ``resolved`` of the drained ``task_ids`` (the queue's own
    timestamps), in seconds; ``RuntimeError`` when one of them did not complete."""
    runs = [queue.status(t)["status"]["runs"][0] for t in task_ids]
    bad = [r for r in runs if r["state"] != "completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} {what} not completed, e.g. {bad[0]}")
    return max(_parse(r["resolved"]) for r in runs) - min(_parse(r["started"]) for r in runs)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _sample_loop(worker: Worker, stop: threading.Event, sample: Callable[[Worker], None]) -> None:
    while not stop.wait(0.1):
        sample(worker)


# -- report ---------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms" if abs(x) < 1 else f"{x:.2f} s"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tcw-bench-", dir=BENCH_DIR))
    path.chmod(0o755)  # multiuser task users must traverse it
    fs = file_system_of(path)
    where = fs.describe() if fs else "file system unknown"
    console.print(f"work dir {path} ({where}; TCWORKER_BENCH_DIR moves it)")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


Row = tuple[str, str, str, str]


def phase_latency(platform: Platform, wt: str, runs: int, budget: Budget) -> Row:
    """1: trivial-task latency through an idle worker vs a bare fork+exec."""
    latency_series(platform.queue, wt, 1, budget)  # warm-up (imports, first claim)
    lat = latency_series(platform.queue, wt, runs, budget)
    base = baseline_true(runs)
    return (
        f"trivial task `true`, createTask → resolved ({len(lat)} runs)",
        f"median {ms(statistics.median(lat))}, p90 {ms(pct(lat, 0.9))}",
        f"subprocess.run(['true']): median {ms(statistics.median(base))}, p90 {ms(pct(base, 0.9))}",
        f"{statistics.median(lat) / statistics.median(base):.0f}× the bare process",
    )


def quiesce(*workers: Worker, timeout: float = 10.0) -> None:
    """Wait until each of `workers` has been idle (no process started or ended under it, next to
    no CPU in it and its descendants) for 150 ms: a multiuser worker removes the last task's user
    and makes the next one after its report, and that background work must not land on the other
    worker's task in an interleaved series. A worker's resident helpers (the launch pool's stub
    forker and parked stubs) are children too, so "no child" cannot be the test. Bounded by
    `timeout`."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(worker.proc.pid)
            quiet = 0  # consecutive 50 ms windows with the same children and < 2 ms of CPU
            while quiet < 3 and time.monotonic() < deadline:
                before = _tree_cpu_seconds(proc)
                time.sleep(0.05)
                after = _tree_cpu_seconds(proc)
                busy = before[1] != after[1] or after[0] - before[0] > 0.002
                quiet = 0 if busy else quiet + 1


def _tree_cpu_seconds(proc: psutil.Process) -> tuple[float, frozenset[int]]:
    """CPU seconds of a process and its live descendants, and the descendants' pids."""
    children = proc.children(recursive=True)
    total = sum(proc.cpu_times()[:2])
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total, frozenset(c.pid for c in children)


def _own_cpu_seconds(pid: int) -> float:
    """A process's own CPU time (user + system), without its children's."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def phase_multiuser(
    platform: Platform,
    tmp: Path,
    key: Path,
    wt: str,
    runs: int,
    n: int,
    budget: Budget,
    simple: Worker | None = None,
) -> list[Row]:
    """5: the same trivial task on a multiuser worker and the simple one.

    Two views: latency of single tasks (interleaved, so load drift hits both alike; before each
    task both workers are left to finish their background work — `quiesce` — so the multiuser
    worker's `userdel`/`useradd` after a report does not land on the simple task that follows),
    with each worker process's own CPU time per task beside it; and a back-to-back drain of `n`
    queued tasks at capacity 1, which also counts the work a multiuser worker does after
    reporting (removing the task user and its files, making the next) before its next claim.
    """
    label = "per-task overhead, engine multiuser vs simple"
    if os.geteuid() != 0:
        return [(label, "skipped", "", "needs root to create task users")]
    if budget.left() < 90:
        return [(label, "skipped", "", "out of time budget")]
    mwt, homes = new_type(), tmp / "homes"
    homes.mkdir(exist_ok=True)
    homes.chmod(0o755)  # task users must traverse it
    multi_conf = {"engine": "multiuser", "headlessTasks": True, "tasksDir": str(homes)}
    multi = Worker(tmp / "lat-multi", platform, key, workerType=mwt, **multi_conf)
    rows: list[Row] = []
    try:
        latency_series(platform.queue, mwt, 1, budget)  # warm-up
        workers = [w for w in (multi, simple) if w is not None]
        mlat: list[float] = []
        slat: list[float] = []
        mcpu = scpu = 0.0
        for _ in range(runs):
            quiesce(*workers)
            before = _own_cpu_seconds(multi.proc.pid)
            mlat += latency_series(platform.queue, mwt, 1, budget)
            mcpu += _own_cpu_seconds(multi.proc.pid) - before
            quiesce(*workers)
            before = _own_cpu_seconds(simple.proc.pid) if simple is not None else 0.0
            slat += latency_series(platform.queue, wt, 1, budget)
            scpu += (_own_cpu_seconds(simple.proc.pid) - before) if simple is not None else 0.0
        rows.append(
            (
                f"{label}: latency ({len(mlat)} runs each, interleaved, workers idle before each)",
                f"multiuser median {ms(statistics.median(mlat))}, p90 {ms(pct(mlat, 0.9))}",
                f"simple median {ms(statistics.median(slat))}, p90 {ms(pct(slat, 0.9))}",
                f"+{ms(statistics.median(mlat) - statistics.median(slat))} per task (median difference)",
            )
        )
        if simple is not None and mlat and slat:
            rows.append(
                (
                    f"{label}: worker process's own CPU per task in that series (children apart)",
                    f"multiuser {ms(mcpu / len(mlat))}",
                    f"simple {ms(scpu / len(slat))}",
                    f"+{ms(mcpu / len(mlat) - scpu / len(slat))} per task",
                )
            )
    except (TimeoutError, RuntimeError, taskcluster.TaskclusterFailure) as exc:
        rows.append((label, "FAILED", "", f"{exc}"[:200]))
    finally:
        multi.stop()
    try:
        m_rate, _, m_worker_cpu, _ = throughput(platform, tmp, key, 1, n, budget, None, **multi_conf)
        s_rate, _, s_worker_cpu, _ = throughput(platform, tmp, key, 1, n, budget, None)
        m_cpu, s_cpu = m_worker_cpu / n, s_worker_cpu / n
        rows.append(
            (
                f"{label}: back to back ({n} queued tasks, capacity 1)",
                f"multiuser {ms(1 / m_rate)} per task",
                f"simple {ms(1 / s_rate)} per task",
                f"+{ms(1 / m_rate - 1 / s_rate)} per task (user created and removed)",
            )
        )
        # CPU is what the load of a shared machine distorts least: the whole worker process
        # (start-up and exit included, the same for both) with everything it ran, per task.
        rows.append(
            (
                f"{label}: worker CPU per task, back to back (worker process and all it ran)",
                f"multiuser {ms(m_cpu)}",
                f"simple {ms(s_cpu)}",
                f"+{ms(m_cpu - s_cpu)} per task",
            )
        )
    except (TimeoutError, RuntimeError) as exc:
        rows.append((f"{label}: back to back", "FAILED", "", str(exc)[:200]))
    return rows


def phase_big_log(platform: Platform, worker: Worker, tmp: Path, wt: str, size: int, budget: Budget) -> Row:
    """3: `size` bytes to stdout through the worker (log to disk + upload) vs to a file directly.

    Wall time on a shared machine is noisy, so the CPU seconds are printed too: the worker
    process's own (the task's `yes`/`head` excluded) and the platform's over the task, beside
    the redirect's (its shell, `yes` and `head`)."""
    cmd = f"yes | head -c {size}"
    if budget.left() < 60:
        return (f"{mib(size)} to stdout", "skipped", "", "out of time budget")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"{cmd} > {tmp / 'big.out'}"], check=True)
    base = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    base_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    (tmp / "big.out").unlink()
    worker_cpu0 = _own_cpu_seconds(worker.proc.pid)
    platform_cpu0 = _own_cpu_seconds(platform.proc.pid)
    t0 = time.time()
    task_id = create(platform.queue, wt, ["sh", "-c", cmd], max_run_time=600)
    try:
        run = wait_resolved(platform.queue, task_id, timeout=max(10, budget.left() - 50), poll=0.1)
    except TimeoutError as exc:
        return (f"{mib(size)} to stdout", "TIMEOUT", f"subprocess: {ms(base)}", str(exc))
    took = _parse(run["resolved"]) - t0
    worker_cpu = _own_cpu_seconds(worker.proc.pid) - worker_cpu0
    platform_cpu = _own_cpu_seconds(platform.proc.pid) - platform_cpu0
    return (
        f"task writing {mib(size)} to stdout, createTask → resolved ({run['state']})",
        f"{ms(took)} ({took / base:.2f}× the redirect); CPU: worker {worker_cpu:.2f} s, "
        f"platform {platform_cpu:.2f} s",
        f"same command > file via subprocess: {ms(base)}; CPU {base_cpu:.2f} s",
        f"{size / took / 2**20:.0f} MiB/s through the worker vs {size / base / 2**20:.0f} MiB/s; "
        f"load average {os.getloadavg()[0]:.1f}",
    )


def phase_throughput(
    platform: Platform, tmp: Path, key: Path, n: int, budget: Budget, idle_rss: int
) -> list[Row]:
    """2 + 4: tasks/s at capacity 1 and 8; RSS sampled while the capacity-8 worker drains its queue."""
    rows: list[Row] = []
    samples: list[int] = []
    for capacity in (1, 8):
        if budget.left() < 25:
            rows.append((f"trivial tasks/s, capacity {capacity}", "skipped", "", "out of time budget"))
            continue
        sampler = (lambda w: samples.append(w.tree_rss())) if capacity == 8 else None
        try:
            rate, span, worker_cpu, platform_cpu = throughput(platform, tmp, key, capacity, n, budget, sampler)
        except (TimeoutError, RuntimeError) as exc:
            rows.append((f"trivial tasks/s, capacity {capacity}", "FAILED", "", str(exc)[:200]))
            continue
        rows.append(
            (
                f"trivial tasks/s, capacity {capacity} ({n} queued tasks)",
                f"{rate:.1f} tasks/s",
                f"CPU per task: worker {ms(worker_cpu / n)} (start-up and `true` included), "
                f"platform {ms(platform_cpu / n)}",
                f"first started → last resolved {ms(span)}; load average {os.getloadavg()[0]:.1f}",
            )
        )
    load = (
        f"under load (capacity 8): median {mib(statistics.median(samples))}, max {mib(max(samples))}"
        if samples
        else "under load: no samples"
    )
    rows.append(
        ("worker RSS (worker + descendants)", f"idle {mib(idle_rss)}", load, "psutil, sampled every 0.1 s")
    )
    return rows


LINE = re.compile(rb"^line (\d+) (\d+\.\d+)$", re.M)
TICKER = "import time\nfor i in range({n}):\n    print(f'line {{i}} {{time.time():.6f}}', flush=True)\n    time.sleep({gap})"


def _live_url(queue: taskcluster.Queue, task_id: str, timeout: float) -> str:
    """Poll until the run's live.log is a reference; its URL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(taskcluster.TaskclusterRestFailure):
            answer = queue.artifact(task_id, "0", "public/logs/live.log")
            if answer.get("storageType") == "reference":
                return str(answer["url"])
        time.sleep(0.005)
    raise TimeoutError(f"no live.log reference for {task_id}")


def _read_stream(url: str, on_chunk: Callable[[float, bytes], None]) -> None:
    with requests.get(url, stream=True, timeout=(10, 120)) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(chunk_size=None):
            on_chunk(time.time(), chunk)


def _line_latencies(chunks: list[tuple[float, bytes]]) -> list[float]:
    seen, out, done = b"", [], set()
    for when, chunk in chunks:
        seen += chunk
        start = max(0, seen.rfind(b"\n", 0, len(seen) - len(chunk)))
        for match in LINE.finditer(seen, start):
            k = int(match.group(1))
            if k not in done and seen[match.end() : match.end() + 1] == b"\n":
                done.add(k)
                out.append(when - float(match.group(2)))
    return out


def phase_live_log(platform: Platform, tmp: Path, wt: str, size: int, runs: int, budget: Budget) -> list[Row]:
    """6: live-log time to first byte, line latency, reader throughput during a 1 GiB task."""
    rows: list[Row] = []
    if budget.left() < 60:
        return [("live log", "skipped", "", "out of time budget")]
    q = platform.queue
    ttfb: list[float] = []
    backing_wait: list[float] = []
    for _ in range(runs):
        task_id = create(q, wt, ["sh", "-c", "echo first; sleep 0.5; echo last"])
        first: list[float] = []
        _read_stream(_live_url(q, task_id, 30), lambda when, _c, first=first: first.append(when))
        run = wait_resolved(q, task_id, 60)
        ttfb.append(first[0] - _parse(run["started"]))
        backing_wait.append(_parse(run["resolved"]) - _parse(run["started"]))
    rows.append(
        (
            f"time to first log byte at a live reader, run started → first byte ({len(ttfb)} runs)",
            f"median {ms(statistics.median(ttfb))}, p90 {ms(pct(ttfb, 0.9))}",
            f"backing log (only way before): available after resolution, median {ms(statistics.median(backing_wait))}",
            "task: echo; sleep 0.5; echo",
        )
    )
    n, gap = 300, 0.01
    program = TICKER.format(n=n, gap=gap)
    task_id = create(q, wt, [sys.executable, "-c", program])
    chunks: list[tuple[float, bytes]] = []
    _read_stream(_live_url(q, task_id, 30), lambda when, c: chunks.append((when, c)))
    wait_resolved(q, task_id, 60)
    lat = _line_latencies(chunks)
    base_chunks: list[tuple[float, bytes]] = []
    with subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while data := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            base_chunks.append((time.time(), data))
    base = _line_latencies(base_chunks)
    rows.append(
        (
            f"live-log line latency, task prints → reader has the line ({len(lat)} of {n} lines, every {ms(gap)})",
            f"p50 {ms(statistics.median(lat))}, p99 {ms(pct(lat, 0.99))}",
            f"same program through a plain pipe: p50 {ms(statistics.median(base))}, p99 {ms(pct(base, 0.99))}",
            "goal p99 ≤ 50 ms",
        )
    )
    if budget.left() < 60:
        rows.append(("live reader throughput", "skipped", "", "out of time budget"))
        return rows
    task_id = create(q, wt, ["sh", "-c", f"yes | head -c {size}"], max_run_time=600)
    got = [0, 0.0, 0.0]  # bytes, first, last

    def count(when: float, chunk: bytes) -> None:
        if not got[0]:
            got[1] = when
        got[0] += len(chunk)
        got[2] = when

    url = _live_url(q, task_id, 60)
    _read_stream(url, count)
    run = wait_resolved(q, task_id, max(10, budget.left() - 20), poll=0.1)
    span = got[2] - got[1]
    task_rate = size / max(1e-9, _parse(run["resolved"]) - _parse(run["started"]))
    rows.append(
        (
            f"live reader following a task writing {mib(size)}",
            f"{got[0] / max(span, 1e-9) / 2**20:.0f} MiB/s ({mib(got[0])} read): kept up",
            f"the task's own run (started → resolved): {task_rate / 2**20:.0f} MiB/s",
            "bounded by the task",
        )
    )
    # The server's own pace: a reader catching up on the finished log (still served for 2 min).
    caught = [0, time.monotonic()]
    _read_stream(url, lambda _w, c: caught.__setitem__(0, caught[0] + len(c)))
    took = time.monotonic() - caught[1]
    t0 = time.monotonic()
    with open(tmp / "copy.out", "wb") as out:
        subprocess.run(["head", "-c", str(size), "/dev/zero"], stdout=out, check=True)
    with open(tmp / "copy.out", "rb") as f:
        while f.read(1 << 20):
            pass
    disk = time.monotonic() - t0
    (tmp / "copy.out").unlink()
    rows.append(
        (
            f"live reader catching up on the finished {mib(got[0])} log",
            f"{caught[0] / took / 2**20:.0f} MiB/s",
            f"write + read back the same size on disk: {size / disk / 2**20:.0f} MiB/s",
            "goal ≥ 200 MiB/s",
        )
    )
    return rows


def _procs_with_arg(arg: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if arg in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _until(predicate: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def cancel_series(queue: taskcluster.Queue, wt: str, runs: int, budget: Budget) -> list[float]:
    """cancelTask → the task's `sleep` is gone, seconds, for `runs` sequential tasks."""
    out: list[float] = []
    for _ in range(runs):
        if budget.left() < 30:
            break
        tag = f"600.{secrets.randbelow(10**8):08d}"  # unique argument: finds exactly this task's sleep
        task_id = create(queue, wt, ["sleep", tag], max_run_time=900)
        if not _until(lambda tag=tag: bool(_procs_with_arg(tag)), min(60, budget.left() - 20)):
            raise RuntimeError(f"task {task_id} never started its sleep")
        time.sleep(secrets.randbelow(2000) / 1000)  # cancel at a random phase of the worker's polls
        t0 = time.monotonic()
        queue.cancelTask(task_id)
        if not _until(lambda tag=tag: not _procs_with_arg(tag), 60):
            for proc in _procs_with_arg(tag):
                proc.kill()
            raise RuntimeError(f"cancelled task {task_id} still running after 60 s")
        out.append(time.monotonic() - t0)
    return out


def baseline_sigterm(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        proc = subprocess.Popen(["sleep", "600"])
        t0 = time.monotonic()
        proc.terminate()
        proc.wait()
        out.append(time.monotonic() - t0)
    return out


def phase_cancel(platform: Platform, tmp: Path, key: Path, wt: str, runs: int, budget: Budget) -> list[Row]:
    """7: cancel → processes gone with default settings, vs reclaim-only detection."""
    lat = cancel_series(platform.queue, wt, runs, budget)
    if not lat:
        return [("cancelTask → task's processes gone", "skipped", "", "out of time budget (--budget)")]
    reclaim_wt = new_type()
    reclaim_only = Worker(
        tmp / "cancel-reclaim",
        platform,
        key,
        workerType=reclaim_wt,
        statusPollIntervalSecs=0,
        reclaimIntervalSecs=1,
    )
    try:
        base = cancel_series(platform.queue, reclaim_wt, max(3, runs // 3), budget)
    finally:
        stop_all([reclaim_only])
    floor = baseline_sigterm(runs)
    base_text = (
        f"reclaim only, reclaimIntervalSecs 1 ({len(base)} runs): median {ms(statistics.median(base))}"
        if base
        else "reclaim only: skipped (budget)"
    )
    return [
        (
            f"cancelTask → task's processes gone, default settings ({len(lat)} runs)",
            f"median {ms(statistics.median(lat))}, p99 {ms(pct(lat, 0.99))}",
            f"{base_text}; default claim without polling: next reclaim ≈ 17 min; "
            f"bare SIGTERM of sleep: median {ms(statistics.median(floor))}",
            "goal ≤ 2 s median",
        )
    ]


def phase_monitor(platform: Platform, tmp: Path, key: Path, runs: int, budget: Budget) -> list[Row]:
    """8: a worker with the resource monitor on vs off, tasks interleaved between the two."""
    label = "resource monitor on vs off (enableResourceMonitor)"
    if budget.left() < 60:
        return [(label, "skipped", "", "budget")]
    on_type, off_type = new_type(), new_type()
    on = Worker(tmp / "monitor-on", platform, key, workerType=on_type)
    off = Worker(tmp / "monitor-off", platform, key, workerType=off_type, enableResourceMonitor=False)
    rows: list[Row] = []
    try:
        time.sleep(3)
        for wt in (on_type, off_type):
            latency_series(platform.queue, wt, 1, budget)  # warm-up
        for command, n in ((["true"], runs), (["sleep", "3"], max(3, runs // 6))):
            lat: dict[str, list[float]] = {"on": [], "off": []}
            cpu: dict[str, float] = {"on": 0.0, "off": 0.0}
            for _ in range(n):
                for name, worker, wt in (("on", on, on_type), ("off", off, off_type)):
                    if budget.left() < 20:
                        break
                    before = _own_cpu_seconds(worker.proc.pid)
                    t0 = time.time()
                    task_id = create(platform.queue, wt, command)
                    run = wait_resolved(platform.queue, task_id, timeout=min(60, budget.left()))
                    lat[name].append(_parse(run["resolved"]) - t0)
                    cpu[name] += _own_cpu_seconds(worker.proc.pid) - before
            if not lat["on"] or not lat["off"]:
                break
            what = " ".join(command)
            rows.append(
                (
                    f"`{what}` createTask → resolved, monitor on vs off ({len(lat['on'])} + {len(lat['off'])} runs)",
                    f"on: median {ms(statistics.median(lat['on']))}, worker CPU {ms(cpu['on'] / len(lat['on']))}/task",
                    f"off: median {ms(statistics.median(lat['off']))}, worker CPU {ms(cpu['off'] / len(lat['off']))}/task",
                    f"load {os.getloadavg()[0]:.1f}",
                )
            )
    finally:
        stop_all([on, off])
    return rows or [(label, "skipped", "", "budget")]


PHASES = ("latency", "multiuser", "biglog", "livelog", "throughput", "cancel", "monitor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential trivial tasks for latency (30)")
    parser.add_argument("--tasks", type=int, default=100, help="tasks per throughput measurement (100)")
    parser.add_argument("--bytes", type=int, default=2**30, help="stdout volume of the big-log task (1 GiB)")
    parser.add_argument("--budget", type=float, default=240.0, help="overall time limit in seconds (240)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 runs, 20 tasks, 64 MiB")
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default all: {','.join(PHASES)})",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.quick:
        args.runs, args.tasks, args.bytes = 5, 20, 2**26
    budget = Budget(args.budget)
    rows: list[Row] = []
    procs: list[Any] = []
    with workspace() as tmp:
        try:
            key = tmp / "ed25519.key"
            new_worker_key(key)
            platform = Platform(tmp / "platform")
            procs.append(platform.proc)
            console.print(
                f"platform at {platform.root_url}; {psutil.cpu_count()} CPUs; budget {args.budget:.0f}s"
            )
            wt = new_type()
            simple = Worker(tmp / "lat-simple", platform, key, workerType=wt)
            procs.append(simple)
            time.sleep(3)  # let it settle into its claimWork long-poll
            simple.check_alive()
            idle_rss = simple.tree_rss()
            if "latency" in only:
                rows.append(phase_latency(platform, wt, args.runs, budget))
            if "multiuser" in only:
                rows += phase_multiuser(
                    platform, tmp, key, wt, max(5, args.runs // 2), max(10, args.tasks // 5), budget, simple
                )
            if "biglog" in only:
                rows.append(phase_big_log(platform, simple, tmp, wt, args.bytes, budget))
            if "livelog" in only:
                try:
                    rows += phase_live_log(platform, tmp, wt, args.bytes, max(3, args.runs // 3), budget)
                except (TimeoutError, RuntimeError, requests.RequestException) as exc:
                    rows.append(("live log", "FAILED", "", str(exc)[:200]))
            if "cancel" in only:
                try:
                    rows += phase_cancel(platform, tmp, key, wt, max(5, args.runs // 2), budget)
                except (TimeoutError, RuntimeError) as exc:
                    rows.append(("cancel to processes gone", "FAILED", "", str(exc)[:200]))
            if "monitor" in only:
                rows += phase_monitor(platform, tmp, key, args.runs, budget)
            if "throughput" in only:
                rows += phase_throughput(platform, tmp, key, args.tasks, budget, idle_rss)
        finally:
            stop_all(procs)
    table = Table(title="tcworker worker benchmark (side by side, one run)")
    for col in ("measurement", "tcworker", "baseline / comparison", "note"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
