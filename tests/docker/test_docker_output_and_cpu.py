"""What reaches the log from a container, and the CPU time a container reports (real dockerd,
real containers, the real kernel's cgroups).

Generic-worker payloads run without a TTY, their stderr in stdout's pipe (one-pipe wrapper), and
the attach stream is demultiplexed chunk by chunk: the log holds exactly the bytes the command
wrote, in the order it wrote them. docker-worker payloads keep docker-worker's TTY. CPU times come
from the run's cgroup parent, per container.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import docker
import pytest
from helpers.dockerimage import import_image
from helpers.dockerruns import make_run
from helpers.logs import RecordingLog

from tcworker.engines.base import EXIT_NOT_STARTED
from tcworker.engines.docker import cputime
from tcworker.engines.docker.attach import MAX_DIVERTED, FrameDemuxer, MultiplexError
from tcworker.engines.docker.sandbox import DockerSandbox

pytestmark = pytest.mark.docker

NO_SH_IMAGE = "tcworker-test/no-sh:latest"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


async def _sandbox(make_engine, tmp_path: Path, kind: str, **overrides) -> DockerSandbox:
    engine = await make_engine(**overrides)
    payload = {"command": [["true"]], "maxRunTime": 60}
    if kind == "docker":
        payload = {"image": "tcworker-test/busybox:latest", "command": ["true"], "maxRunTime": 60}
    sandbox = await engine.prepare(make_run(tmp_path, payload, kind=kind))
    assert isinstance(sandbox, DockerSandbox)
    return sandbox


async def _run(sandbox: DockerSandbox, argv: list[str], **env: str):
    log = RecordingLog()
    result = await sandbox.execute(argv, {"TASK_ID": "tid", "RUN_ID": "0", **env}, log)
    return result, log


# ---- the demultiplexer (Docker's frame format, cut at every possible place) ----------------------


def test_demuxer_returns_the_payloads_in_order_however_the_stream_is_cut() -> None:
    frames = [(1, b"out1\n"), (2, b"err1\n"), (1, b""), (1, b"\r\n\x00binary"), (2, b"x" * 300)]
    stream = b"".join(frame(s, d) for s, d in frames)
    expected = b"".join(d for _, d in frames)
    for cut in range(len(stream) + 1):
        demuxer = FrameDemuxer()
        got = demuxer.feed(stream[:cut]) + demuxer.feed(stream[cut:])
        assert got == expected, cut
        assert demuxer.at_frame_boundary
    rng = random.Random(5)
    for _ in range(200):
        demuxer = FrameDemuxer()
        pieces, pos = [], 0
        while pos < len(stream):
            step = rng.randint(1, 13)
            pieces.append(demuxer.feed(stream[pos : pos + step]))
            pos += step
        assert b"".join(pieces) == expected


def test_demuxer_diverts_stderr_when_asked_and_bounds_it() -> None:
    demuxer = FrameDemuxer(divert_stderr=True)
    got = demuxer.feed(frame(1, b"a") + frame(2, b"E" * (MAX_DIVERTED + 100)) + frame(1, b"b"))
    assert got == b"ab"
    assert bytes(demuxer.diverted) == b"E" * MAX_DIVERTED


def test_demuxer_refuses_what_is_not_docker_output_and_notices_a_cut_frame() -> None:
    with pytest.raises(MultiplexError, match="stream 7"):
        FrameDemuxer().feed(frame(7, b"x"))
    demuxer = FrameDemuxer()
    demuxer.feed(frame(1, b"hello")[:-2])
    assert not demuxer.at_frame_boundary


# ---- generic-worker payloads: no TTY, one pipe -----------------------------------------------------


async def test_generic_output_is_exactly_the_bytes_written_in_order(make_engine, tmp_path: Path) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, "generic")
    script = (
        "i=0; while [ $i -lt 3000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; "
        "printf 'cr\\r\\nnul\\000end' ; printf 'tail-on-stderr' >&2; "
        "[ -t 1 ] && echo STDOUT-IS-A-TTY; [ -t 2 ] && echo STDERR-IS-A-TTY; true"
    )
    try:
        result, log = await _run(sandbox, ["sh", "-c", script])
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    expected = "".join(f"out{i}\nerr{i}\n" for i in range(3000)).encode() + b"cr\r\nnul\x00endtail-on-stderr"
    assert bytes(log.data) == expected


async def test_generic_big_output_arrives_whole_and_in_chunks(make_engine, tmp_path: Path) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, "generic")
    size = 32 * 1024 * 1024
    script = f"head -c {size} /dev/urandom > data; cat data; md5sum data >&2; rm data"
    try:
        result, log = await _run(sandbox, ["sh", "-c", script])
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    data = bytes(log.data)
    body, digest_line = data[:size], data[size:]
    assert digest_line == f"{hashlib.md5(body).hexdigest()}  data\n".encode()
    assert 1 < log.biggest_chunk <= 1024 * 1024


async def test_the_wrapper_adds_nothing_to_the_environment(make_engine, tmp_path: Path) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, "generic")
    try:
        _, plain = await _run(sandbox, ["env"])
        _, kept = await _run(sandbox, ["env"], PWD="/set/by/task", SHLVL="it's 7")
    finally:
        await sandbox.destroy()
    names = {line.split("=", 1)[0] for line in plain.text.splitlines()}
    assert not names & {"SHLVL", "PWD"}, plain.text
    assert "PWD=/set/by/task" in kept.text.splitlines() and "SHLVL=it's 7" in kept.text.splitlines()


async def test_generic_start_errors_name_the_command(make_engine, tmp_path: Path) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, "generic")
    script = sandbox.task_dir / "not-executable.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    try:
        missing, missing_log = await _run(sandbox, ["no-such-command-odc"])
        absent, _ = await _run(sandbox, ["/no/such/file"])
        not_exec, _ = await _run(sandbox, [str(script)])
        exits_127, log_127 = await _run(sandbox, ["sh", "-c", "echo about to fail >&2; exit 127"])
    finally:
        await sandbox.destroy()
    assert missing.exit_code == EXIT_NOT_STARTED
    assert missing.start_error and 'exec: "no-such-command-odc": executable file not found' in missing.start_error
    assert bytes(missing_log.data) == b""
    assert absent.exit_code == EXIT_NOT_STARTED and "/no/such/file" in str(absent.start_error)
    assert not_exec.exit_code == EXIT_NOT_STARTED and "permission denied" in str(not_exec.start_error)
    # a command that ran and exited 127 is its own exit, its stderr in the log
    assert exits_127.exit_code == 127 and exits_127.start_error is None
    assert log_127.text == "about to fail\n"


async def test_an_image_without_sh_runs_unwrapped(
    make_engine, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """No ``/bin/sh`` in the image: the command runs as it is, both streams reach the log."""
    try:
        docker_client.images.get(NO_SH_IMAGE)
    except docker.errors.ImageNotFound:
        import_image(docker_client, NO_SH_IMAGE, changes=['CMD ["/bin/busybox", "true"]'])
        # remove the sh applet link: the image keeps busybox but has no /bin/sh
        container = docker_client.containers.create(NO_SH_IMAGE, ["/bin/busybox", "rm", "/bin/sh"])
        try:
            container.start()
            assert container.wait()["StatusCode"] == 0
            repo, tag = NO_SH_IMAGE.split(":")
            container.commit(repo, tag, changes='CMD ["/bin/busybox", "true"]')
        finally:
            container.remove(force=True)
    sandbox = await _sandbox(make_engine, tmp_path, "generic", dockerImage=NO_SH_IMAGE)
    try:
        result, log = await _run(sandbox, ["/bin/busybox", "ash", "-c", "echo out; echo err >&2"])
        missing, _ = await _run(sandbox, ["no-such-command-odc"])
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    assert sorted(log.text.splitlines()) == ["err", "out"]
    assert missing.exit_code == EXIT_NOT_STARTED and "no-such-command-odc" in str(missing.start_error)


# ---- docker-worker payloads keep docker-worker's TTY -----------------------------------------------


async def test_docker_worker_payload_keeps_the_tty(make_engine, tmp_path: Path) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, "docker")
    try:
        result, log = await _run(sandbox, ["sh", "-c", "[ -t 1 ] && echo tty; echo err >&2"])
    finally:
        await sandbox.destroy()
    assert result.exit_code == 0
    assert bytes(log.data) == b"tty\r\nerr\r\n"


# ---- CPU times -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["generic", "docker"])
async def test_cpu_times_are_per_container_and_the_group_goes_away(
    make_engine, tmp_path: Path, kind: str
) -> None:
    sandbox = await _sandbox(make_engine, tmp_path, kind)
    run_cpu = sandbox._cpu
    assert run_cpu is not None, "this host runs dockerd with the cgroupfs driver: CPU times must be measured"
    busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"
    try:
        spin, _ = await _run(sandbox, ["sh", "-c", busy])
        idle, _ = await _run(sandbox, ["sleep", "0.5"])
        # ~0.1–0.2 s spent in the kernel (clearing 1 MiB per read); busybox's `head -c` from
        # /dev/zero, used before, spends its time in user space and only ~0.02 s in the kernel.
        kernel, _ = await _run(sandbox, ["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=8000"])
    finally:
        await sandbox.destroy()
    assert spin.exit_code == idle.exit_code == kernel.exit_code == 0
    assert spin.user_time > 0.1 and spin.user_time > 5 * spin.system_time
    assert spin.user_time + spin.system_time <= spin.wall_time + 0.05
    # the second container is charged only its own time (its start, ~0.02–0.07 s of CPU on a busy
    # 2-core machine), not the first one's (~0.4 s) again
    idle_cpu = idle.user_time + idle.system_time
    assert idle_cpu < max(0.05, (spin.user_time + spin.system_time) / 4), (idle, spin)
    assert kernel.system_time > 0.02
    left = [str(m.path) for m in run_cpu.accounting.mounts if (m.path / cputime.TOP_GROUP / run_cpu.name).exists()]
    assert left == []


def test_cpu_split_follows_the_kernels_rule() -> None:
    assert cputime.CpuCounters(1_000_000_000, 3, 1).seconds() == (0.75, 0.25)
    assert cputime.CpuCounters(500_000_000, 0, 0).seconds() == (0.5, 0.0)
    assert cputime.CpuCounters(500_000_000, 0, 9).seconds() == (0.0, 0.5)
    later, earlier = cputime.CpuCounters(10, 8, 2), cputime.CpuCounters(4, 4, 0)
    assert later.minus(earlier) == cputime.CpuCounters(6, 4, 2)


def test_cpu_accounting_is_found_from_docker_info_and_mounts() -> None:
    mountinfo = (
        "30 25 0:26 / /sys/fs/cgroup/cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpuacct\n"
        "31 25 0:27 /sub /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    found = cputime.detect({"CgroupDriver": "cgroupfs", "CgroupVersion": "1"}, mountinfo)
    assert isinstance(found, cputime.CpuAccounting)
    assert found.counter_mount.path == Path("/sys/fs/cgroup/cpuacct")
    assert [m.path.name for m in found.mounts] == ["cpuacct", "unified"]  # /sub is not a hierarchy root
    v2 = cputime.detect({"CgroupDriver": "cgroupfs", "CgroupVersion": "2"}, mountinfo)
    assert isinstance(v2, cputime.CpuAccounting) and v2.counter_mount.version == 2
    assert "systemd" in str(cputime.detect({"CgroupDriver": "systemd", "CgroupVersion": "2"}, mountinfo))


def test_stale_groups_of_dead_workers_are_removed(docker_client: docker.DockerClient) -> None:
    found = cputime.detect(docker_client.info())
    assert isinstance(found, cputime.CpuAccounting)
    dead_pid = 4_000_000  # above pid_max's ceiling: no process has it
    assert not os.path.exists(f"/proc/{dead_pid}")
    stale = found.counter_mount.path / cputime.TOP_GROUP / f"task_x_0-deadbeef-w{dead_pid}"
    mine = found.counter_mount.path / cputime.TOP_GROUP / f"task_y_0-cafe-w{os.getpid()}"
    for group in (stale, mine):
        group.mkdir(parents=True, exist_ok=True)
    try:
        assert stale.name in found.remove_stale()
        assert not stale.exists() and mine.exists()
    finally:
        for group in (stale, mine):
            if group.exists():
                group.rmdir()
