"""The trimmed path of a run's first command (issue 15 item 1): what was taken off it must not
take a guarantee with it.

- The parked stub's request carries its length: the stub starts the command as soon as it has the
  whole request (not when the worker closes the pipe), and a request cut short — its worker died
  while writing it — starts nothing.
- ``CommandRunner`` wakes on one future for "exited or aborted" and finishes inline when nothing
  is left: an abort arriving while the command is being handed to its stub still stops it, a
  command that leaves a process behind still gets it killed (the slow path), and the worker's
  descriptors stay flat across many runs through parked stubs, both ends included.
- The request is encoded as one string; it must be byte for byte what encoding each entry did.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest
from helpers.engines import command_env, run_context, unique_sleep
from helpers.logs import RecordingLog

from tcworker.engines import cgroups, spawnstub
from tcworker.engines.base import CancelReason
from tcworker.engines.process import CommandRunner
from tcworker.engines.simple import SimpleEngine

pytestmark = pytest.mark.timeout(180)



async def _park(group: cgroups.TaskCgroup) -> spawnstub.StubLaunch:
    stub = spawnstub.StubLaunch.park([d / "cgroup.procs" for d in group.dirs], 1 << 16)
    procs = group.dirs[0] / "cgroup.procs"
    for _ in range(500):
        if str(stub.popen.pid) in procs.read_text().split():
            return stub
        await asyncio.sleep(0.01)
    raise AssertionError("the parked stub never joined its cgroup")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def test_the_stub_starts_the_command_before_the_request_pipe_is_closed(
    group: cgroups.TaskCgroup, scratch: Path
) -> None:
    """The whole request is there: the command runs although the worker still holds the pipe."""
    stub = await _park(group)
    marker = scratch / "ran"
    request = spawnstub.encode_request(
        ["sh", "-c", f"echo ok > {marker}"], {"PATH": "/usr/bin:/bin"}, str(scratch), None
    )
    fd, stub._request = stub._request, -1
    try:
        os.write(fd, request)  # and keep the write end open
        for _ in range(1000):
            if stub.popen.poll() is not None:
                break
            await asyncio.sleep(0.01)
        assert stub.popen.poll() == 0
        assert marker.read_text() == "ok\n"
        assert stub.start_error() is None
    finally:
        os.close(fd)
        os.close(stub.output)


async def test_a_request_in_pieces_is_read_whole(group: cgroups.TaskCgroup, scratch: Path) -> None:
    """A writer that hands the request over in two writes (a big request, a slow thread): the
    stub waits for the rest instead of starting a command with half an environment."""
    stub = await _park(group)
    env = {"PATH": "/usr/bin:/bin", "BIG": "y" * 5000, "LAST": "z"}
    request = spawnstub.encode_request(["sh", "-c", 'printf %s "$LAST"'], env, str(scratch), None)
    fd, stub._request = stub._request, -1
    os.write(fd, request[:3000])
    await asyncio.sleep(0.3)
    assert stub.popen.poll() is None  # still reading
    os.write(fd, request[3000:])
    os.close(fd)
    out = _read_all(stub.output)
    assert stub.popen.wait(10) == 0 and out == b"z"
    assert stub.start_error() is None


async def test_a_request_cut_short_starts_nothing(group: cgroups.TaskCgroup, scratch: Path) -> None:
    """The worker died while writing the request (its end of the pipe closed early): the stub
    ends without starting the command, saying why on the report pipe."""
    stub = await _park(group)
    marker = scratch / "must-not-exist"
    env = {"PATH": "/usr/bin:/bin", "PAD": "p" * 4000}
    request = spawnstub.encode_request(["touch", str(marker)], env, str(scratch), None)
    fd, stub._request = stub._request, -1
    os.write(fd, request[: len(request) - 100])
    os.close(fd)
    os.close(stub.output)
    assert stub.popen.wait(10) == 127
    error = stub.start_error()
    assert error is not None and "cannot read the command to start" in str(error)
    assert not marker.exists()


async def test_a_malformed_length_starts_nothing(group: cgroups.TaskCgroup, scratch: Path) -> None:
    stub = await _park(group)
    fd, stub._request = stub._request, -1
    os.write(fd, b"12x\0keep\0-1\0-1\0\0/\0")
    os.close(fd)
    os.close(stub.output)
    assert stub.popen.wait(10) == 127
    assert "cannot read the command to start" in str(stub.start_error())


async def test_an_abort_while_the_command_is_handed_over_stops_it(
    group: cgroups.TaskCgroup, scratch: Path
) -> None:
    """``abort`` lands between the start of ``run`` and its wait (here: in the send itself): the
    command is stopped at once, not left to run its 30 s."""
    stub = await _park(group)
    runner = CommandRunner(grace=1, cgroup=group, parked=stub)
    send = stub.send

    async def send_then_abort(*args: object) -> None:
        await send(*args)  # type: ignore[arg-type]
        runner.abort(CancelReason.CANCELLED)

    stub.send = send_then_abort  # type: ignore[method-assign]
    token = unique_sleep()
    started = time.monotonic()
    result = await runner.run(["sleep", token], {"PATH": "/usr/bin:/bin"}, str(scratch), RecordingLog())
    assert result.cancel_reason is CancelReason.CANCELLED
    assert time.monotonic() - started < 15
    assert not [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


@pytest.fixture
async def engine(simple_engine: Callable[[int], Awaitable[SimpleEngine]]) -> SimpleEngine:
    return await simple_engine(1)


async def _one_run(engine: SimpleEngine, script: str) -> tuple[int, str]:
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        result = await sandbox.execute(["sh", "-c", script], command_env(sandbox), log)
        return result.exit_code, log.text
    finally:
        await sandbox.destroy()


async def test_a_process_left_behind_is_still_killed(engine: SimpleEngine) -> None:
    """The command exits but leaves a child holding its output pipe: no inline finish; the
    group is killed and ``execute`` returns, with nothing of the command left."""
    token = unique_sleep()
    started = time.monotonic()
    code, out = await _one_run(engine, f"sleep {token} & echo left")
    assert code == 0 and "left" in out
    assert time.monotonic() - started < 15
    assert not [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]


async def test_descriptors_stay_flat_across_many_runs(engine: SimpleEngine) -> None:
    """Every run through a parked stub (and the next stub parked after it), the quick end and
    the slow one, start errors included: the worker holds the same descriptors after as before."""
    await _one_run(engine, "true")  # first-use allocations (loop, pools) before counting
    before = sorted(os.listdir("/proc/self/fd"))
    for i in range(60):
        script = ("sleep 5 & true", "echo hi", "exit 3")[i % 3]
        await _one_run(engine, script)
    log = RecordingLog()
    sandbox = await engine.prepare(run_context(log))
    try:
        result = await sandbox.execute(["no-such-command-tcw-fast"], command_env(sandbox), log)
        assert result.start_error
    finally:
        await sandbox.destroy()
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_the_request_is_what_encoding_each_entry_gives() -> None:
    env = {"PATH": "/a/:b::/c", "UNI": "é – \udcff", "EMPTY": "", "EQ": "a=b"}
    assert spawnstub.encode_environment(env) == spawnstub._encode_environment_items(env)
    assert spawnstub.encode_environment({}) == b""
    for bad in ({"A=B": "x"}, {"A": "x\0y"}, {"A\0": "x"}):
        with pytest.raises(ValueError):
            spawnstub.encode_environment(bad)
    with pytest.raises(ValueError):
        spawnstub.encode_request(["a\0b"], {}, "/", None)
    body = spawnstub.encode_request(["true"], env, "/w", None)
    length, _, rest = body.partition(b"\0")
    assert int(length) == len(rest)
    assert rest.split(b"\0")[:6] == [b"keep", b"-1", b"-1", b"", b"/w", b"4"]
    assert spawnstub.exec_candidates("true", env) == ["/a/true", "b/true", "./true", "/c/true"]
    assert spawnstub.exec_candidates("true", {}) == [
        p if "/" in p else "./" + p for p in (os.path.join(d, "true") for d in os.get_exec_path({}))
    ]


def test_a_leftover_group_of_the_same_name_is_replaced(cgroup_host: cgroups.CgroupHost) -> None:
    """A fresh group is one ``mkdir`` per hierarchy now; an empty leftover of a crashed run with
    the same name is still removed and made again, with the limits applied."""
    name = cgroups.group_name(f"task_leftover_{os.getpid()}")
    limits = cgroups.TaskLimits(64, 256 << 20)
    leftover = cgroup_host.create(name, cgroups.TaskLimits(7, 64 << 20))
    try:
        marker_dirs = list(leftover.dirs)
        again = cgroup_host.create(name, limits)
        try:
            assert again.dirs == marker_dirs and all(d.is_dir() for d in again.dirs)
            pids_dir = cgroup_host.v1.get("pids") if cgroup_host.pids == "v1" else cgroup_host.v2
            assert pids_dir is not None
            assert (pids_dir / name / "pids.max").read_text().strip() == "64"
        finally:
            again.remove()
    finally:
        leftover.remove()
    assert not [d for d in marker_dirs if d.exists()]
