"""What a finished log keeps after its task: the live-log server on a real port, real task log
files, read over HTTP with aiohttp.

A finished log stays readable for ``RETAIN_AFTER_END`` through an open descriptor; a worker
draining many short tasks must not pile those up (one per task for two minutes), nor remember
every token it ever served, nor keep a timer per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tcworker.livelog import server as livelog_server
from tcworker.livelog.server import LiveLogServer
from tcworker.worker.tasklog import TaskLog


def _open_fds_on(paths: list[Path]) -> int:
    targets = {str(p) for p in paths}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.removesuffix(" (deleted)") in targets:
            count += 1
    return count


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as response:
        return response.status, await response.read()


@contextlib.asynccontextmanager
async def _server(monkeypatch: pytest.MonkeyPatch, **limits: float) -> AsyncIterator[LiveLogServer]:
    """A started server with module limits patched (``MAX_ENDED_KEPT=5``, …), stopped afterwards."""
    for name, value in limits.items():
        monkeypatch.setattr(livelog_server, name, value)
    server = LiveLogServer()
    await server.start("", 0)
    try:
        yield server
    finally:
        await server.stop()


async def _finished_logs(server: LiveLogServer, tmp_path: Path, n: int) -> list[tuple[str, Path]]:
    logs = []
    for i in range(n):
        task_log = TaskLog(tmp_path / f"log-{i}.txt")
        token = server.register(task_log)
        task_log.write(f"task {i}\n".encode())
        task_log.close()
        logs.append((token, task_log.path))
    await asyncio.sleep(0.05)  # the close callbacks reach the loop
    return logs


async def test_finished_logs_kept_open_are_bounded_oldest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _server(monkeypatch, MAX_ENDED_KEPT=5) as server:
        logs = await _finished_logs(server, tmp_path, 12)
        paths = [path for _, path in logs]
        assert _open_fds_on(paths) == 5
        async with aiohttp.ClientSession() as session:
            for i, (token, _) in enumerate(logs):
                status, body = await _get(session, server.url(token))
                if i < 7:
                    assert status == 410, (i, status)
                else:
                    assert (status, body) == (200, f"task {i}\n".encode())
    assert _open_fds_on(paths) == 0


async def test_a_reader_of_a_log_retired_early_still_gets_all_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _server(monkeypatch, MAX_ENDED_KEPT=1) as server:
        task_log = TaskLog(tmp_path / "running.txt")
        token = server.register(task_log)
        task_log.write(b"first\n")
        async with aiohttp.ClientSession() as session:
            reading = asyncio.ensure_future(_get(session, server.url(token)))
            await asyncio.sleep(0.1)  # the reader is waiting for more
            task_log.write(b"second\n")
            task_log.close()
            await asyncio.sleep(0.05)
            await _finished_logs(server, tmp_path, 3)  # pushes the first log out early
            status, body = await asyncio.wait_for(reading, 10)
            assert (status, body) == (200, b"first\nsecond\n")
            assert (await _get(session, server.url(token)))[0] == 410
        assert _open_fds_on([task_log.path]) == 0


async def test_logs_retire_on_time_with_one_timer_and_old_tokens_are_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _server(monkeypatch, RETAIN_AFTER_END=0.3, MAX_RETIRED_TOKENS=4) as server:
        logs = await _finished_logs(server, tmp_path, 10)
        paths = [path for _, path in logs]
        assert _open_fds_on(paths) == 10
        async with aiohttp.ClientSession() as session:
            assert (await _get(session, server.url(logs[0][0])))[0] == 200
            await asyncio.sleep(0.6)
            assert _open_fds_on(paths) == 0
            statuses = [(await _get(session, server.url(token)))[0] for token, _ in logs]
        # the last four retired tokens still say "ended"; older ones are forgotten (401)
        assert statuses == [401] * 6 + [410] * 4
        assert server._sweep is None  # noqa: SLF001 - nothing left to wait for, no timer kept
