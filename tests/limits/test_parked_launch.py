"""A run's first command starts through a stub parked ahead of time in the run's cgroup
(``spawnstub.StubLaunch.park``, ``launchpool.LaunchPool``): the command must get exactly what a
freshly spawned one gets — its cgroup, working directory, environment, session, start errors —
and nothing of a stub that was never used may be left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.engines import command_env, make_config, run_context
from helpers.logs import RecordingLog

from tcworker.engines import cgroups, spawnstub, stubforker
from tcworker.engines.base import EXIT_NOT_STARTED
from tcworker.engines.launchpool import LaunchPool
from tcworker.engines.process import CommandRunner
from tcworker.engines.simple import SimpleEngine

pytestmark = pytest.mark.timeout(120)



def _procs(group: cgroups.TaskCgroup) -> list[Path]:
    return [d / "cgroup.procs" for d in group.dirs]


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _members(group: cgroups.TaskCgroup) -> set[int]:
    return {int(p) for d in group.dirs for p in (d / "cgroup.procs").read_text().split()}


Park = Callable[[cgroups.TaskCgroup], Awaitable[spawnstub.StubLaunch]]


@pytest.fixture(params=["spawned", "forked"])
def park(request: pytest.FixtureRequest) -> Iterator[Park]:
    """``await park(group)``: a parked stub that has joined ``group`` (the join happens in the
    child, asynchronously), spawned on its own or made by a ``StubForker`` as the pool makes them."""
    forker = stubforker.StubForker.start() if request.param == "forked" else None

    async def make(group: cgroups.TaskCgroup) -> spawnstub.StubLaunch:
        if forker is not None:
            stub = forker.park(_procs(group), 1 << 16)
        else:
            stub = spawnstub.StubLaunch.park(_procs(group), 1 << 16)
        for _ in range(500):
            if stub.popen.pid in _members(group):
                return stub
            await asyncio.sleep(0.01)
        raise AssertionError("the parked stub never joined its cgroup")

    yield make
    if forker is not None:
        forker.close()


async def test_a_parked_stub_waits_as_root_in_the_group_with_an_empty_environment(
    group: cgroups.TaskCgroup, park: Park
) -> None:
    os.environ["TCW_WORKER_ONLY_SECRET"] = "must-not-reach-the-task"
    try:
        stub = await park(group)
    finally:
        del os.environ["TCW_WORKER_ONLY_SECRET"]
    try:
        assert _environ(stub.popen.pid) == b""
        assert os.getsid(stub.popen.pid) == stub.popen.pid  # a session of its own
        assert stub.waiting()
    finally:
        await stub.discard()


async def test_the_command_gets_exactly_its_environment(
    group: cgroups.TaskCgroup, scratch: Path, park: Park
) -> None:
    os.environ["TCW_WORKER_ONLY_SECRET"] = "must-not-reach-the-task"
    try:
        stub = await park(group)
    finally:
        del os.environ["TCW_WORKER_ONLY_SECRET"]
    env = {"PATH": "/usr/bin:/bin", "ODD": "a=b\nc d", "EMPTY": ""}
    await stub.send(["env", "-0"], env, str(scratch), None)
    out = _read_all(stub.output)
    assert stub.popen.wait(10) == 0, out
    assert stub.start_error() is None
    assert [e for e in out.split("\0") if e] == [f"{k}={v}" for k, v in env.items()]


async def test_the_command_runs_in_the_group_in_its_directory_leading_the_session(
    group: cgroups.TaskCgroup, scratch: Path, park: Park
) -> None:
    stub = await park(group)
    script = 'cat /proc/self/cgroup; pwd; echo "sid $(ps -o sid= $$) pid $$"'
    await stub.send(["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, str(scratch), None)
    out = _read_all(stub.output)
    assert stub.popen.wait(10) == 0, out
    assert stub.start_error() is None
    assert out.count(group.name) == len(group.dirs), out
    assert str(scratch) in out.splitlines()
    assert f"sid {stub.popen.pid} pid {stub.popen.pid}" in " ".join(out.split()), out


@pytest.mark.parametrize(
    ("argv", "cwd", "expected"),
    [
        (["no-such-command-tcw-parked"], None, FileNotFoundError),
        (["true"], "/nonexistent-tcw-parked", FileNotFoundError),
        (["./data.txt"], None, PermissionError),
    ],
)
async def test_start_errors_come_back_as_start_errors(
    group: cgroups.TaskCgroup,
    scratch: Path,
    argv: list[str],
    cwd: str | None,
    expected: type[OSError],
    park: Park,
) -> None:
    (scratch / "data.txt").write_text("not a program\n")  # mode 0644: not executable
    stub = await park(group)
    await stub.send(argv, {"PATH": "/usr/bin:/bin"}, cwd or str(scratch), None)
    _read_all(stub.output)
    stub.popen.wait(10)
    assert isinstance(stub.start_error(), expected)


async def test_an_unused_parked_stub_ends_and_leaves_nothing(group: cgroups.TaskCgroup, park: Park) -> None:
    stub = await park(group)
    pid = stub.popen.pid
    await stub.discard()
    assert stub.popen.returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _members(group) == set()


async def test_a_stub_whose_worker_died_ends_by_itself(group: cgroups.TaskCgroup, park: Park) -> None:
    """The request pipe's writer is gone: the stub reads an empty request and exits 0."""
    stub = await park(group)
    os.close(stub._request)  # what the kernel does when the worker dies
    stub._request = -1
    assert stub.popen.wait(10) == 0
    os.close(stub.output)
    stub.close()


def _all_ready_groups(cgroup_host: cgroups.CgroupHost) -> set[Path]:
    return {
        d
        for parent in cgroup_host.parents()
        for d in parent.iterdir()
        if d.name.startswith("task_ready_") and d.name.endswith(f"-w{os.getpid()}")
    }


_OTHERS: dict[str, set[Path]] = {"groups": set()}  # other engines' ready groups in this process


def _ready_groups(cgroup_host: cgroups.CgroupHost) -> list[Path]:
    """The ready groups of the engine under test (other tests' engines in this process may have
    theirs: the groups of this test process that existed before it started are left out)."""
    return sorted(_all_ready_groups(cgroup_host) - _OTHERS["groups"])


@pytest.fixture
async def engine(
    simple_engine: Callable[[int], Awaitable[SimpleEngine]], cgroup_host: cgroups.CgroupHost
) -> SimpleEngine:
    _OTHERS["groups"] = _all_ready_groups(cgroup_host)
    return await simple_engine(2)


async def _kill_parked_stubs(cgroup_host: cgroups.CgroupHost) -> None:
    """SIGKILL the stub waiting in each ready group (once it has joined it) and wait for the end."""
    killed: set[int] = set()
    for _ in range(500):
        groups = _ready_groups(cgroup_host)
        members = {int(p) for d in groups for p in (d / "cgroup.procs").read_text().split()}
        for pid in members - killed:
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if len(killed) >= 3 and not members - killed:  # capacity 2: all three stubs
            break
        await asyncio.sleep(0.01)
    assert len(killed) == 3, killed
    for _ in range(500):
        if not _forkers_holding_pipes() and all(
            not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in killed
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"parked stubs {killed} did not die, or a forker still holds their pipes")


def _forkers_holding_pipes() -> list[int]:
    """Stub forkers of this process that still hold copies of their last stub's pipes (until
    they read the worker's ``C``): a dead stub's request pipe still has a reader there, so a
    request sent to it would not fail. Under load the forker can be that late."""
    holding = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if "--" not in argv or not argv[0].endswith("perl"):
                continue
            control, replies = argv[argv.index("--") + 1 : argv.index("--") + 3]
            fds = set(os.listdir(f"/proc/{child.pid}/fd"))
            base = {"0", "1", "2", control, replies}
            if {control, replies} <= fds and fds - base:  # a stub has closed both: this is the forker
                holding.append(child.pid)
    return holding


async def _first_command(engine: SimpleEngine, script: str) -> tuple[Any, str, Any]:
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        result = await sandbox.execute(["sh", "-c", script], command_env(sandbox), log)
        return result, log.text, sandbox.cgroup
    finally:
        await sandbox.destroy()


async def test_the_engine_hands_each_run_a_ready_group_and_makes_the_next_after_it(
    engine: SimpleEngine, cgroup_host: cgroups.CgroupHost
) -> None:
    before = {d.name for d in _ready_groups(cgroup_host)}
    assert len(before) == 3  # capacity 2, and one spare
    result, out, group = await _first_command(engine, "cat /proc/self/cgroup")
    assert result.exit_code == 0, out
    assert group.name in before and group.name in out
    after = {d.name for d in _ready_groups(cgroup_host)}
    assert len(after) == 3 and group.name not in after  # used once, replaced after the run


async def test_a_parked_stub_killed_meanwhile_is_not_used(
    engine: SimpleEngine, cgroup_host: cgroups.CgroupHost
) -> None:
    """Someone killed the waiting stubs: the run starts its command the usual way, in its group."""
    await _kill_parked_stubs(cgroup_host)
    result, out, group = await _first_command(engine, "cat /proc/self/cgroup; echo ran")
    assert result.exit_code == 0 and "ran" in out, out
    assert group.name in out


async def test_a_start_error_through_the_engine_is_a_start_error(engine: SimpleEngine) -> None:
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        result = await sandbox.execute(["no-such-command-tcw-parked"], command_env(sandbox), log)
    finally:
        await sandbox.destroy()
    assert result.exit_code == EXIT_NOT_STARTED and "no such file" in (result.start_error or "")


async def test_shutdown_ends_every_parked_stub_and_removes_its_group(
    scratch: Path, cgroup_host: cgroups.CgroupHost
) -> None:
    _OTHERS["groups"] = _all_ready_groups(cgroup_host)
    simple = SimpleEngine(kill_grace=1.0)
    await simple.initialise(make_config(scratch, "simple", capacity=3))
    groups = _ready_groups(cgroup_host)
    pids = {int(p) for d in groups for p in (d / "cgroup.procs").read_text().split()}
    await simple.shutdown()
    assert not _ready_groups(cgroup_host)
    assert not [
        p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


def test_the_pool_gives_up_quietly_when_groups_cannot_be_made(cgroup_host: cgroups.CgroupHost) -> None:
    """A host that refuses the groups: runs make their own (and report that error themselves)."""
    pool = LaunchPool(cgroup_host, cgroups.TaskLimits(64, 1 << 30), 2, 1 << 16)
    broken = cgroups.CgroupHost(v2=Path("/nonexistent-tcw-cgroup"))
    pool._host = broken
    pool.top_up()
    assert pool.take() is None


async def test_a_worker_restart_removes_a_dead_workers_ready_groups(
    cgroup_host: cgroups.CgroupHost, park: Park
) -> None:
    """A crashed worker's parked stubs and groups: its groups are named like any run's, so the
    next worker's start kills the stubs and removes the groups."""
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    name = f"task_ready_deadbeef-w{gone.pid}"
    group = cgroup_host.create(name, cgroups.TaskLimits(64, 1 << 30))
    stub = await park(group)
    try:
        assert name in cgroup_host.remove_stale()
        assert stub.popen.wait(10) == -signal.SIGKILL
        assert not [d for d in cgroup_host.parents() if (d / name).exists()]
    finally:
        await stub.discard()


async def test_a_host_runs_memory_figure_is_one_cgroup_read(engine: SimpleEngine) -> None:
    """The resource monitor samples it on the loop (no thread trip) only where that is cheap."""
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        assert sandbox.memory_usage_is_cheap()
        running = asyncio.ensure_future(
            sandbox.execute(
                ["python3", "-c", "b = b'x' * (64 << 20); import time; time.sleep(1)"],
                command_env(sandbox),
                log,
            )
        )
        await asyncio.sleep(0.7)
        used = sandbox.memory_usage_bytes()
        assert (await running).exit_code == 0, log.text
        assert used is not None and used >= 64 << 20, used
    finally:
        await sandbox.destroy()


async def test_a_stub_that_dies_just_before_its_request_is_replaced(
    engine: SimpleEngine, cgroup_host: cgroups.CgroupHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stub dies between the check and the request (EPIPE on the send): the command starts
    the usual way, in the run's group, instead of failing to start."""
    monkeypatch.setattr(spawnstub.StubLaunch, "waiting", lambda self: True)
    await _kill_parked_stubs(cgroup_host)
    result, out, group = await _first_command(engine, "cat /proc/self/cgroup; echo ran")
    assert result.exit_code == 0 and "ran" in out, (result, out)
    assert group.name in out


async def test_a_dead_parked_stub_leaves_no_descriptor_in_the_worker(
    engine: SimpleEngine, cgroup_host: cgroups.CgroupHost
) -> None:
    """The pool drops a stub that died while parked: its request and output pipes too, not only
    its report pipe (two descriptors per dead stub would stay open in the worker)."""
    await _kill_parked_stubs(cgroup_host)
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(2):  # capacity 2: both dead stubs are taken and dropped
        result, out, _group = await _first_command(engine, "echo ran")
        assert result.exit_code == 0 and "ran" in out, out
    # the pool holds two fresh pairs instead (three descriptors each, as the dead ones had)
    assert len(os.listdir("/proc/self/fd")) - fds_before == 0


async def test_a_run_cancelled_while_its_request_is_sent_never_starts_the_command(
    group: cgroups.TaskCgroup, scratch: Path, park: Park
) -> None:
    """A request too big for the pipe is written by a thread while the stub reads it (here the
    stub is held up, as by its start-up or cgroup join); the run is cancelled meanwhile: the stub
    must not go on to start the command of a cancelled run."""
    stub = await park(group)
    os.kill(stub.popen.pid, signal.SIGSTOP)
    marker = scratch / "started-after-cancel"
    env = {"PATH": "/usr/bin:/bin", **{f"BIG{i}": "x" * 100_000 for i in range(14)}}  # ~1.4 MB
    runner = CommandRunner(grace=1, cgroup=group, parked=stub)
    running = asyncio.ensure_future(
        runner.run(["sh", "-c", f"touch {marker}"], env, str(scratch), RecordingLog())
    )
    await asyncio.sleep(0.5)  # the request fills the pipe; the writing thread waits
    assert not running.done()
    asyncio.get_running_loop().call_later(0.5, _resume, stub.popen.pid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 20)
    await asyncio.sleep(1.0)
    _resume(stub.popen.pid)
    assert not marker.exists(), "the command of a cancelled run started"
    assert stub.popen.poll() is not None


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
