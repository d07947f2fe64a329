"""A command's output drained (``tcworker.engines.pipepump``) through ``CommandRunner``: by the loop
while it is small, by a thread of its own past ``HANDOFF_BYTES``.

Real commands, real pipes, real threads: every byte arrives in order and before ``run`` returns,
the bulk of a big output off the event loop's thread, and a slow writer's line arrives while the
command still runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

from tcworker.engines.pipepump import HANDOFF_BYTES, LOOP_READ
from tcworker.engines.process import CommandRunner


class _Recorder:
    """A sink that keeps every chunk with the thread and time it arrived on."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.threads: set[int] = set()
        self.times: list[float] = []
        self.bytes_by_thread: dict[int, int] = {}

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.threads.add(threading.get_ident())
        self.times.append(time.monotonic())
        ident = threading.get_ident()
        self.bytes_by_thread[ident] = self.bytes_by_thread.get(ident, 0) + len(data)


def _run(argv: list[str], sink: _Recorder, cwd: Path) -> tuple[int, float]:
    async def main() -> tuple[int, float]:
        result = await CommandRunner(grace=1).run(argv, dict(os.environ), str(cwd), sink)
        return result.exit_code, time.monotonic()

    return asyncio.run(main())


def test_fast_writer_arrives_whole_and_in_order_mostly_off_the_loop(tmp_path: Path) -> None:
    size = 64 << 20
    script = f"yes 0123456789abcdef | head -c {size}; echo; echo tail-line"
    sink = _Recorder()
    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    code, _ = _run(["sh", "-c", script], sink, tmp_path)
    assert code == 0
    data = b"".join(sink.chunks)
    expected = (b"0123456789abcdef\n" * (size // 17 + 1))[:size] + b"\ntail-line\n"
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert sink.bytes_by_thread.get(loop_thread, 0) < HANDOFF_BYTES + LOOP_READ
    assert len(sink.threads - {loop_thread}) == 1  # one pump thread took the rest


def test_a_few_lines_are_read_on_the_loop_without_a_thread(tmp_path: Path) -> None:
    sink = _Recorder()
    loop_thread = threading.get_ident()
    started: list[str] = []
    real_start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    threading.Thread.start = recording_start  # type: ignore[method-assign]
    try:
        code, _ = _run(["sh", "-c", "echo one; echo two >&2; echo three"], sink, tmp_path)
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert code == 0
    assert b"".join(sink.chunks) == b"one\ntwo\nthree\n"
    assert sink.threads == {loop_thread}
    assert "tcw-pipe" not in started


def test_slow_writer_lines_arrive_while_the_command_runs(tmp_path: Path) -> None:
    sink = _Recorder()
    code, ended = _run(["sh", "-c", "echo first; sleep 1; echo second"], sink, tmp_path)
    assert code == 0
    assert b"".join(sink.chunks) == b"first\nsecond\n"
    assert sink.chunks[0] == b"first\n"
    assert ended - sink.times[0] >= 0.7  # the first line did not wait for the end


def test_command_that_cannot_start_leaves_no_pump_behind(tmp_path: Path) -> None:
    before = threading.active_count()
    sink = _Recorder()
    code, _ = _run([str(tmp_path / "missing-program")], sink, tmp_path)
    assert code != 0
    assert sink.chunks == []
    assert threading.active_count() == before


def test_commands_leave_no_descriptor_open_in_the_worker(tmp_path: Path) -> None:
    """Each command's pump closes every pipe it made (small output on the loop, big output with
    the thread): a long-running worker must not run out of descriptors."""

    async def main() -> int:
        runner = CommandRunner(grace=1)
        await runner.run(["true"], dict(os.environ), str(tmp_path), _Recorder())  # warm up
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(10):
            await runner.run(["true"], dict(os.environ), str(tmp_path), _Recorder())
            big = f"head -c {2 * HANDOFF_BYTES} /dev/zero"
            await runner.run(["sh", "-c", big], dict(os.environ), str(tmp_path), _Recorder())
        return len(os.listdir("/proc/self/fd")) - before

    assert asyncio.run(main()) == 0


def test_output_goes_on_when_no_thread_can_be_started(tmp_path: Path) -> None:
    """Past ``HANDOFF_BYTES`` the pump starts its thread; when the host refuses one (threads or
    descriptors exhausted) the loop reads on, instead of leaving the command blocked on a full
    pipe until its max run time."""
    size = 4 << 20
    sink = _Recorder()
    real_start = threading.Thread.start

    def refusing_start(self: threading.Thread) -> None:
        if self.name == "tcw-pipe":
            raise RuntimeError("can't start new thread")
        real_start(self)

    async def main() -> int:
        runner = CommandRunner(grace=1)
        script = f"head -c {size} /dev/zero; echo end"
        result = await asyncio.wait_for(
            runner.run(["sh", "-c", script], dict(os.environ), str(tmp_path), sink), 30
        )
        return result.exit_code

    threading.Thread.start = refusing_start  # type: ignore[method-assign]
    try:
        code = asyncio.run(main())
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert code == 0
    assert b"".join(sink.chunks) == b"\0" * size + b"end\n"
