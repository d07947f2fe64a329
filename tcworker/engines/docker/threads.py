"""Long-held blocking docker calls, each in a thread of its own instead of the loop's shared pool.

A running container holds up to three blocking calls for its whole life (its output stream, the
wait for its exit, the watch for its ``die`` event). In ``asyncio.to_thread``'s default executor
(``min(32, cpus + 4)`` threads: six on a two-core worker) two containers would already take most of
the pool, and with a few more every other ``to_thread`` of the worker — file I/O, and the
``docker kill`` that ends an over-time container — would queue behind calls that only end when a
container does. Short calls keep using ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_own_thread(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a new daemon thread called ``name``; its result (or exception) is awaited.

    Callbacks ``fn`` schedules with ``call_soon_threadsafe`` run before the awaiting coroutine
    resumes (the result is handed over the same way, after them). Cancelling the await does not
    stop ``fn``: the caller makes it return (kill the container, close its stream).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as e:  # handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
                loop.call_soon_threadsafe(settle, None, e)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future
