"""Where a finished host run's clean-up runs (``hostsandbox.ReleaseLane``): on the event loop when
the run is the engine's only one and ends the usual way (its cgroup empty, its task directory
small), after the work the loop had ready; in a thread otherwise. Either way the result must be
the same: the group removed, the task directory kept for reuse or removed, processes left behind
killed, the launch pool topped up once.

Real engine, real cgroups, real stubs; the tests only record in which thread the release ran.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from helpers.engines import command_env, run_context
from helpers.logs import RecordingLog

from tcworker.engines import cgroups, hostsandbox
from tcworker.engines.hostsandbox import HostSandbox
from tcworker.engines.launchpool import LaunchPool
from tcworker.engines.simple import SimpleEngine
from tcworker.taskdirs import SMALL_TREE_ENTRIES

pytestmark = pytest.mark.timeout(120)

Events = list[tuple[str, int]]


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> Events:
    """``("release" | "release at once", thread id)`` for every pass of a sandbox's release (a spy:
    the real one runs); a test may add its own events to see the order."""
    seen: Events = []
    real = HostSandbox._release_leftovers

    def spy(self: HostSandbox, remove_task_dir: bool, at_once: bool) -> bool:
        seen.append(("release at once" if at_once else "release", threading.get_ident()))
        return real(self, remove_task_dir, at_once)

    monkeypatch.setattr(HostSandbox, "_release_leftovers", spy)
    return seen


def _pool(engine: SimpleEngine) -> LaunchPool:
    assert engine._launches is not None, "no launch pool: stubs unavailable on this host?"
    return engine._launches


async def _ran(engine: SimpleEngine, script: str) -> HostSandbox:
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    result = await sandbox.execute(["sh", "-c", script], command_env(sandbox), log)
    assert result.exit_code == 0, log.text
    return sandbox


def _spares(task_dir: Path) -> list[Path]:
    """The emptied task dirs the engine keeps for later runs (``tcworker.sparedirs``)."""
    return list((task_dir.parent / ".spare" / "tasks").iterdir())


def _group_dirs(sandbox: HostSandbox) -> list[Path]:
    """The run's cgroup directories (one per hierarchy), to check they are gone afterwards."""
    assert sandbox.cgroup is not None, "no per-task cgroup on this host"
    return list(sandbox.cgroup.dirs)


def _gone(dirs: list[Path]) -> bool:
    return not any(d.exists() for d in dirs)


async def test_the_engines_only_run_is_released_on_the_loop_after_the_work_ready_before_it(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], releases: Events
) -> None:
    engine = await simple_engine(1)
    sandbox = await _ran(engine, "touch left-behind; mkdir -p a/b")
    group_dirs = _group_dirs(sandbox)
    task_dir = sandbox.task_dir
    inode = task_dir.stat().st_ino
    me = threading.get_ident()

    async def ready_work() -> None:  # like the next claimWork: its request goes out on its third turn
        for _ in range(2):
            await asyncio.sleep(0)
        releases.append(("ready work", me))

    pending = asyncio.ensure_future(ready_work())
    await sandbox.destroy()
    await pending
    assert releases == [("ready work", me), ("release at once", me)]  # on the loop, in one pass, after it
    assert _gone(group_dirs)
    assert not task_dir.exists() and len(_spares(task_dir)) == 1
    assert len(_pool(engine)._ready) == 2  # topped up: capacity 1, and one spare
    again = await engine.prepare(run_context())
    try:  # the emptied directory came back for the next run
        assert again.task_dir.stat().st_ino == inode
        assert [p.name for p in again.task_dir.iterdir()] == [hostsandbox.PRIVATE_DIR]
    finally:
        await again.destroy()


async def test_while_another_run_is_alive_the_release_goes_to_a_thread(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], releases: Events
) -> None:
    engine = await simple_engine(2)
    first = await _ran(engine, "true")
    second = await _ran(engine, "true")
    await first.destroy()
    assert len(releases) == 1 and releases[0][0] == "release"
    assert releases[0][1] != threading.get_ident()
    await second.destroy()  # now the only one
    assert releases[1] == ("release at once", threading.get_ident())
    assert len(_pool(engine)._ready) == 3
    assert not first.task_dir.exists() and not second.task_dir.exists()


async def test_a_process_left_in_the_group_sends_the_release_to_the_thread_which_kills_it(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], releases: Events
) -> None:
    """Something the run's kill missed (joined the group later): the loop does not wait for it;
    the thread kills it, removes the group and the directory, and keeps no directory a process
    of the run could still reach."""
    engine = await simple_engine(1)
    sandbox = await _ran(engine, "true")
    group_dirs = _group_dirs(sandbox)
    straggler = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        for d in group_dirs:
            (d / "cgroup.procs").write_text(str(straggler.pid))
        task_dir = sandbox.task_dir
        await sandbox.destroy()
        assert await asyncio.wait_for(straggler.wait(), 10) != 0
    finally:
        if straggler.returncode is None:
            straggler.kill()
            await straggler.wait()
    me = threading.get_ident()
    assert releases[0] == ("release at once", me)
    assert releases[1][0] == "release" and releases[1][1] != me
    assert _gone(group_dirs)
    assert not task_dir.exists()
    assert len(_pool(engine)._ready) == 2  # topped up once
    assert not _spares(task_dir)  # not kept for a later run: removed


async def test_a_big_task_directory_is_removed_in_the_thread(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], releases: Events
) -> None:
    engine = await simple_engine(1)
    sandbox = await _ran(engine, f"mkdir many && cd many && touch $(seq 1 {SMALL_TREE_ENTRIES * 2})")
    group_dirs = _group_dirs(sandbox)
    await sandbox.destroy()
    me = threading.get_ident()
    assert [r[0] for r in releases] == ["release at once", "release"]
    assert releases[1][1] != me
    assert _gone(group_dirs)
    assert not sandbox.task_dir.exists()
    assert len(_pool(engine)._ready) == 2


def test_a_top_up_under_way_is_not_waited_for(cgroup_host: cgroups.CgroupHost) -> None:
    """On the loop, a run's top-up never waits for another one (in a thread) to finish: that
    one fills the pool to its size anyway."""
    pool = LaunchPool(cgroup_host, cgroups.TaskLimits(64, 1 << 30), 1, 1 << 16)
    assert pool._filling.acquire()  # a top-up under way elsewhere
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (pool.top_up(), done.set()), daemon=True).start()
        assert done.wait(10), "top_up waited for the one under way"
        assert pool.take() is None  # it made nothing itself
    finally:
        pool._filling.release()
    pool.top_up()
    ready = pool.take()
    assert ready is not None
    group, stub = ready
    asyncio.run(stub.discard())
    assert stub.popen.poll() is not None
    if not group.remove_if_empty():
        group.remove()
    asyncio.run(pool.close())
