"""Acceptance (issue 2, item 2, load): 2,000 tasks, 50 concurrent claimWork pollers.

Every run is handed out exactly once (no duplicates), none is lost, and all end completed.
All clients are `taskcluster.aio` in this one process, each poller with its own workerId and a
random `tasks` of 1..4; tasks are created while the pollers already wait, so the long-poll
notification path is exercised under contention. The time bound only catches hangs.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import aiohttp
import pytest
import slugid
import taskcluster
import taskcluster.aio
from helpers.platformproc import PlatformProcess
from helpers.tasks import new_queue_id, task_def

N_TASKS = 2000
N_POLLERS = 50
N_CREATORS = 16
HANG_BOUND_S = 240


@pytest.mark.slow
async def test_2000_tasks_50_pollers_exactly_once(platform: PlatformProcess) -> None:
    q = new_queue_id()
    task_ids = [slugid.nice() for _ in range(N_TASKS)]
    handed: list[tuple[str, int, str]] = []
    completed: list[str] = []
    errors: list[BaseException] = []
    all_done = asyncio.Event()

    connector = aiohttp.TCPConnector(limit=N_POLLERS + N_CREATORS + 20)
    async with taskcluster.aio.createSession(connector=connector) as session:
        submitter = taskcluster.aio.Queue(platform.options(maxRetries=0), session=session)
        worker = taskcluster.aio.Queue(platform.options(maxRetries=0), session=session)

        async def poller(i: int) -> None:
            rng = random.Random(i)
            worker_id = f"poller-{i}"
            try:
                while not all_done.is_set():
                    resp = await worker.claimWork(
                        q, {"workerGroup": "load", "workerId": worker_id, "tasks": rng.randint(1, 4)}
                    )
                    for c in resp["tasks"]:
                        task_id, run_id = c["status"]["taskId"], c["runId"]
                        handed.append((task_id, run_id, worker_id))
                        assert c["workerId"] == worker_id
                        run_q = taskcluster.aio.Queue(
                            platform.options(c["credentials"], maxRetries=0), session=session
                        )
                        status = await run_q.reportCompleted(task_id, run_id)
                        assert status["status"]["state"] == "completed"
                        completed.append(task_id)
                    if len(completed) >= N_TASKS:
                        all_done.set()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # surface the first failure instead of hanging
                errors.append(exc)
                all_done.set()

        async def creator(chunk: list[str]) -> None:
            try:
                for task_id in chunk:
                    await submitter.createTask(
                        task_id, task_def(q, priority=random.choice(["low", "lowest", "high"]))
                    )
            except BaseException as exc:
                errors.append(exc)
                all_done.set()

        started = time.monotonic()
        pollers = [asyncio.create_task(poller(i)) for i in range(N_POLLERS)]
        await asyncio.sleep(0.5)  # let them all wait in claimWork first
        creators = [asyncio.create_task(creator(task_ids[i::N_CREATORS])) for i in range(N_CREATORS)]
        try:
            await asyncio.wait_for(all_done.wait(), timeout=HANG_BOUND_S)
        finally:
            elapsed = time.monotonic() - started
            for t in pollers + creators:
                t.cancel()
            await asyncio.gather(*pollers, *creators, return_exceptions=True)
        assert not errors, f"{len(errors)} errors, first: {errors[0]!r}"

        counts = Counter(task_id for task_id, _, _ in handed)
        duplicates = {t: n for t, n in counts.items() if n > 1}
        assert not duplicates, f"{len(duplicates)} tasks handed out more than once"
        assert set(counts) == set(task_ids), f"{len(set(task_ids) - set(counts))} tasks never handed out"
        assert all(run_id == 0 for _, run_id, _ in handed)
        assert len(set(completed)) == N_TASKS

        sem = asyncio.Semaphore(32)

        async def state(task_id: str) -> str:
            async with sem:
                return (await submitter.status(task_id))["status"]["state"]

        states = Counter(await asyncio.gather(*(state(t) for t in task_ids)))
        assert states == {"completed": N_TASKS}, states
        assert (await submitter.pendingTasks(q))["pendingTasks"] == 0

    per_worker = Counter(w for _, _, w in handed)
    print(
        f"\n{N_TASKS} tasks created+claimed+completed by {N_POLLERS} pollers in {elapsed:.1f}s "
        f"= {N_TASKS / elapsed:.0f} tasks/s; pollers used: {len(per_worker)}, "
        f"max per poller {max(per_worker.values())}"
    )
