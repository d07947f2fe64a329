"""Parked stubs made by the forker (``stubforker``): each is the worker's own child, holds nothing
of the forker, the forker holds nothing of it once the worker has its pipes, and the pool goes on
without a forker that died. What a parked stub gives its command is tested for both ways of
making one in test_parked_launch.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.ci import skip_or_fail
from helpers.engines import command_env, run_context
from helpers.logs import RecordingLog

from tcworker.engines import cgroups, spawnstub, stubforker
from tcworker.engines.launchpool import LaunchPool
from tcworker.engines.process import CommandRunner
from tcworker.engines.simple import SimpleEngine

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def forker() -> Iterator[stubforker.StubForker]:
    if not stubforker.forker_available():
        skip_or_fail("no command stub forker on this host (perl, or system call numbers unknown)")
    made = stubforker.StubForker.start()
    yield made
    made.close()


def _fds(pid: int) -> set[int]:
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _procs(group: cgroups.TaskCgroup) -> list[Path]:
    return [d / "cgroup.procs" for d in group.dirs]


async def _release(pair: tuple[cgroups.TaskCgroup, spawnstub.StubLaunch] | None) -> None:
    """End a ready pair taken from a pool: its stub, then its group."""
    assert pair is not None
    group, stub = pair
    await stub.discard()
    if not group.remove_if_empty():
        group.remove()


def _pool_of(engine: SimpleEngine) -> LaunchPool:
    assert engine._launches is not None
    return engine._launches


def _recording_park(pool: LaunchPool, made: list[int], delay: float = 0.0) -> Callable[[Any], Any]:
    """``pool.park`` that notes the pid of each stub it makes (after ``delay`` seconds)."""
    park = pool.park

    def recording(join: Any) -> Any:
        time.sleep(delay)
        stub = park(join)
        made.append(stub.popen.pid)
        return stub

    return recording


async def test_a_forked_stub_is_our_child_and_its_rusage_is_ours(
    forker: stubforker.StubForker, group: cgroups.TaskCgroup, scratch: Path
) -> None:
    stub = forker.park(_procs(group), 1 << 16)
    assert psutil.Process(stub.popen.pid).ppid() == os.getpid()  # not the forker's
    runner = CommandRunner(grace=1, cgroup=group, parked=stub)
    log = RecordingLog()
    script = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; cat /proc/self/cgroup; ls /proc/self/fd"
    result = await runner.run(["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, str(scratch), log)
    assert result.exit_code == 0, log.text
    assert result.user_time + result.system_time > 0  # wait4's rusage of our child
    assert log.text.count(group.name) == len(group.dirs), log.text
    # the command holds stdin, stdout, stderr (and ls its directory): nothing of the forker
    fds = [line for line in log.text.splitlines() if line.strip().isdigit()]
    assert sorted(map(int, fds)) == [0, 1, 2, 3], log.text


async def test_the_forker_keeps_nothing_of_a_stub_and_the_stub_nothing_of_the_forker(
    forker: stubforker.StubForker, group: cgroups.TaskCgroup
) -> None:
    before = _fds(forker.pid)
    stubs = [forker.park(_procs(group), 1 << 16) for _ in range(3)]
    try:
        await asyncio.sleep(0.2)  # the forker has read the close of the last stub's copies
        assert _fds(forker.pid) == before
        for stub in stubs:
            # stdin, the output pipe on stdout and stderr, the request and report pipes: no more
            assert len(_fds(stub.popen.pid)) == 5, os.listdir(f"/proc/{stub.popen.pid}/fd")
            assert _environ(stub.popen.pid) == b""
            assert os.getsid(stub.popen.pid) == stub.popen.pid
    finally:
        for stub in stubs:
            await stub.discard()
    assert [stub.popen.returncode for stub in stubs] == [0, 0, 0]


async def test_stubs_outlive_the_forker_and_the_forker_ends_with_its_control_pipe(
    forker: stubforker.StubForker, group: cgroups.TaskCgroup, scratch: Path
) -> None:
    stub = forker.park(_procs(group), 1 << 16)
    pid = forker.pid
    forker.close()  # what the worker's death does to the control pipe, then the reaping
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(stubforker.ForkerGone):
        forker.park(_procs(group), 1 << 16)
    log = RecordingLog()
    runner = CommandRunner(grace=1, cgroup=group, parked=stub)
    result = await runner.run(["echo", "still here"], {"PATH": "/usr/bin:/bin"}, str(scratch), log)
    assert result.exit_code == 0 and "still here" in log.text, log.text


async def test_the_pool_spawns_its_stubs_when_the_forker_died(
    cgroup_host: cgroups.CgroupHost, caplog: pytest.LogCaptureFixture
) -> None:
    pool = LaunchPool(cgroup_host, cgroups.TaskLimits(64, 1 << 30), 2, 1 << 16)
    try:
        pool.top_up()
        assert pool._forker is not None
        os.kill(pool._forker.pid, signal.SIGKILL)
        pairs = [pool.take(), pool.take()]
        assert all(pair is not None for pair in pairs)
        with caplog.at_level(logging.WARNING):
            pool.top_up()  # the forker is found dead: two stubs spawned on their own
        assert "forker lost" in caplog.text
        assert pool._forker is None
        fresh = [pool.take(), pool.take()]
        assert all(pair is not None and pair[1].waiting() for pair in fresh)
        for pair in pairs + fresh:
            await _release(pair)
    finally:
        await pool.close()


async def test_the_engines_stubs_come_from_its_forker(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]],
) -> None:
    engine = await simple_engine(1)
    pool = _pool_of(engine)
    assert pool._forker is not None
    forker_pid = pool._forker.pid
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        result = await sandbox.execute(["sh", "-c", "echo ran"], command_env(sandbox), log)
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0 and "ran" in log.text, log.text
    await engine.shutdown()
    assert not psutil.pid_exists(forker_pid) or psutil.Process(forker_pid).status() == psutil.STATUS_ZOMBIE


async def _two_commands(engine: SimpleEngine) -> tuple[list[Any], str, int]:
    """Exit codes' results, the log, and how often the second saw its run's group in /proc/self/cgroup
    less the number of hierarchies (0: it was in the group in every one)."""
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    group = sandbox.cgroup
    assert group is not None
    name, hierarchies = group.name, len(group.dirs)
    try:
        results = [
            await sandbox.execute(["sh", "-c", script], command_env(sandbox), log)
            for script in ("echo first", "cat /proc/self/cgroup; echo second $$")
        ]
    finally:
        await sandbox.destroy()
    return results, log.text, log.text.count(name) - hierarchies


async def test_a_runs_later_command_gets_its_stub_from_the_pool_on_the_spot(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await simple_engine(1)
    pool = _pool_of(engine)
    made: list[int] = []
    monkeypatch.setattr(pool, "park", _recording_park(pool, made))
    results, out, outside = await _two_commands(engine)
    assert [r.exit_code for r in results] == [0, 0], out
    assert "first" in out and "second" in out
    assert outside == 0, out
    second = int(out.split("second ")[1].split()[0])
    assert made[0] == second  # the first command used the parked stub; then the pool's top-up


async def test_a_later_command_starts_when_the_pool_cannot_make_a_stub(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await simple_engine(1)

    def failing_park(join: Any) -> Any:
        raise OSError(11, "no process to be had")

    monkeypatch.setattr(_pool_of(engine), "park", failing_park)
    results, out, outside = await _two_commands(engine)
    assert [r.exit_code for r in results] == [0, 0] and "second" in out, out
    assert outside == 0, out


async def test_a_run_cancelled_while_its_later_stub_is_made_leaves_no_stub(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread still makes the stub after the run was cancelled: it is ended and reaped, not
    left waiting (nor a zombie, nor its pipes open in the worker)."""
    engine = await simple_engine(1)
    made: list[int] = []
    slow_park = _recording_park(_pool_of(engine), made, delay=0.5)
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        first = await sandbox.execute(["true"], command_env(sandbox), log)
        assert first.exit_code == 0, log.text
        monkeypatch.setattr(sandbox._runner, "_park", slow_park)
        fds_before = len(os.listdir("/proc/self/fd"))
        running = asyncio.ensure_future(sandbox.execute(["echo", "never"], command_env(sandbox), log))
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert len(made) == 1
        assert not psutil.pid_exists(made[0])  # ended and reaped: not even a zombie
        assert len(os.listdir("/proc/self/fd")) == fds_before
        assert "never" not in log.text
    finally:
        await sandbox.destroy()


async def test_a_forker_whose_descriptors_we_cannot_open_is_given_up_for_spawned_stubs(
    cgroup_host: cgroups.CgroupHost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A /proc we may not read the forker's descriptors in (``hidepid``, no ptrace access): the
    clone is killed and reaped, and the pool goes on with spawned stubs instead of giving up."""
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any) -> int:
        if str(path).startswith("/proc/") and "/fd/" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(stubforker.os, "open", refusing_open)
    pool = LaunchPool(cgroup_host, cgroups.TaskLimits(64, 1 << 30), 1, 1 << 16)
    try:
        with caplog.at_level(logging.WARNING):
            pool.top_up()
        assert "forker lost" in caplog.text
        ready = pool.take()
        assert ready is not None and ready[1].waiting()
        await _release(ready)
    finally:
        await pool.close()
