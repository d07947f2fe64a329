"""In-process wake-ups for long-polling ``claimWork`` callers (no database polling).

``createTask``, retries, reruns, ``scheduleTask`` and dependency resolution call
``notify(queue, n)`` after their transaction commits; it wakes up to ``n`` waiters on that task
queue, oldest first. A per-queue sequence number closes the gap between a waiter's empty claim
attempt and its registration: if anything was notified meanwhile, the waiter tries again at once
instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class Waiters:
    """Per-task-queue FIFO of sleeping claimWork calls."""

    def __init__(self) -> None:
        self._waiting: dict[str, OrderedDict[int, asyncio.Future[None]]] = {}
        self._seq: dict[str, int] = {}
        self._ids = 0
        self.closed = False

    def seq(self, queue: str) -> int:
        return self._seq.get(queue, 0)

    def notify(self, queue: str, count: int = 1) -> None:
        self._seq[queue] = self._seq.get(queue, 0) + 1
        waiting = self._waiting.get(queue)
        while waiting and count > 0:
            _, fut = waiting.popitem(last=False)
            if not fut.done():
                fut.set_result(None)
                count -= 1
        if waiting is not None and not waiting:
            del self._waiting[queue]

    async def wait(self, queue: str, timeout: float) -> bool:
        """Sleep until notified (True) or until ``timeout`` passes or the server stops (False)."""
        if self.closed or timeout <= 0:
            return False
        self._ids += 1
        key = self._ids
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(queue, OrderedDict())[key] = fut
        try:
            await asyncio.wait_for(fut, timeout)
            return not self.closed
        except TimeoutError:
            return False
        finally:
            waiting = self._waiting.get(queue)
            if waiting is not None:
                waiting.pop(key, None)
                if not waiting:
                    del self._waiting[queue]

    def close(self) -> None:
        """Release every waiter (server shutdown): they answer ``{"tasks": []}`` at once."""
        self.closed = True
        for waiting in self._waiting.values():
            for fut in waiting.values():
                if not fut.done():
                    fut.set_result(None)
        self._waiting.clear()
