"""Following a task's live log from the outside, as ``tcworker local`` and ``tcworker submit`` do.

The follower asks the queue for the run's live-log artifact with the official client
(``queue.artifact``): while the task runs it is a ``reference`` to the worker's live-log URL,
which is then streamed to ``out`` as it grows. A dropped connection is resumed with
``?offset=<bytes already printed>``, so nothing is printed twice or lost. If the live log cannot
be reached (a worker on another host behind a firewall, an old worker without live logs) the
follower says why and the caller prints the backing log once the task is resolved, skipping what
was already printed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp

RESOLVED = ("completed", "failed", "exception")
RETRIES = 5  # consecutive failed (re)connections before giving up on the live log
CONNECT_TIMEOUT = 5.0


@dataclass
class FollowResult:
    """What the follower printed: ``run_id`` it followed, bytes written, whether it saw the end."""

    run_id: int | None = None
    written: int = 0
    complete: bool = False
    reason: str | None = None  # why the live log could not be (fully) followed


def live_log_name(task: dict[str, Any]) -> str:
    """The live log's artifact name in a task definition (payload ``logs.live`` / docker ``log``)."""
    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    if "image" in payload:
        return str(payload.get("log") or "public/logs/live.log")
    logs = payload.get("logs") if isinstance(payload.get("logs"), dict) else {}
    assert isinstance(logs, dict)
    return str(logs.get("live") or "public/logs/live.log")


async def _current_run(queue: Any, task_id: str) -> tuple[int | None, str]:
    status = (await queue.status(task_id))["status"]
    runs = status.get("runs") or []
    if not runs:
        return None, str(status["state"])
    return int(runs[-1]["runId"]), str(runs[-1]["state"])


async def _live_url(queue: Any, task_id: str, name: str, result: FollowResult) -> str | None:
    """Wait until the run has its live-log reference; ``None`` when there is nothing to follow."""
    delay = 0.05
    missing = 0  # lookups of a running run's live log that found nothing
    while True:
        run_id, state = await _current_run(queue, task_id)
        if run_id is not None and state not in ("pending",):
            result.run_id = run_id
            if state in RESOLVED:  # over before it could be followed: the caller prints the backing log
                if missing > 2:  # not just a task too quick to be caught running
                    result.reason = f"{name} was not available while the task ran"
                return None
            try:
                answer = await queue.artifact(task_id, str(run_id), name)
            except Exception as e:  # 404: not created yet (or this run has no live log)
                missing += 1
                if getattr(e, "status_code", None) != 404:
                    result.reason = f"cannot look up {name}: {e}"
                    return None
            else:
                if answer.get("storageType") == "reference":
                    return str(answer["url"])
                if answer.get("storageType") != "object":
                    result.reason = f"{name} is a {answer.get('storageType')} artifact"
                return None  # already a link to the backing log: the task is ending
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def follow(
    queue: Any, task_id: str, name: str, out: BinaryIO, write: Callable[[bytes], None] | None = None
) -> FollowResult:
    """Stream the live log of the task's current run to ``out`` until it ends (or cannot be read)."""
    result = FollowResult()
    url = await _live_url(queue, task_id, name, result)
    if url is None:
        return result
    emit = write or (lambda data: (out.write(data), out.flush()))
    failures = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        while failures < RETRIES:
            try:
                async with session.get(url, params={"offset": str(result.written)}) as resp:
                    if resp.status != 200:
                        result.reason = f"the live log at {url} answered {resp.status}"
                        if resp.status in (401, 404, 410):
                            return result
                        failures += 1
                        continue
                    async for chunk in resp.content.iter_any():
                        emit(chunk)
                        result.written += len(chunk)
                        failures = 0
                result.complete = True
                result.reason = None
                return result
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                failures += 1
                result.reason = f"the live log at {url} cannot be read ({e or type(e).__name__})"
                with contextlib.suppress(Exception):
                    _, state = await _current_run(queue, task_id)
                    if state in RESOLVED:
                        return result
                await asyncio.sleep(min(0.2 * 2**failures, 2.0))
    return result
