"""Find and kill every process a command started, including ones that tried to escape.

A task's command runs as the leader of a new session and process group, but its descendants may
leave both (``setsid``, ``setpgid``, double ``fork``) and get re-parented to init. This module
keeps a ``ProcessTree`` of everything seen below the leader (polled while the command runs), finds
members by group/session and, for the simple engine, by a marker variable in their environment
(``TASK_WORKDIR=<task dir>``: re-parented daemons keep their environment) or by holding the
command's output pipe open (a double-forked, ``setsid``, environment-clearing child still writes to
the task log; only one that also closes its output can escape that way). For the multiuser
engine ``kill_user_processes`` is the authoritative sweep: every process of the task's uid dies,
whatever its ancestry.

Processes are read straight from ``/proc`` (one pass over ``/proc/*/stat`` per scan) rather than
through ``psutil.process_iter``, because a scan runs several times per command and must stay cheap.
Each process is identified by ``(pid, start time)`` so that a recycled pid is never signalled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from tcworker.engines import runas

log = logging.getLogger(__name__)

PROC = "/proc"


@dataclass(frozen=True)
class ProcInfo:
    """One line of ``/proc/<pid>/stat`` that matters here."""

    pid: int
    ppid: int
    pgrp: int
    session: int
    start_time: int
    state: str

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcInfo | None:
    """The process's stat entry, or ``None`` when it is gone."""
    try:  # os-level calls: this runs for every process on the host, several times per command
        fd = os.open(f"{PROC}/{pid}/stat", os.O_RDONLY)
        try:
            raw = os.read(fd, 1024)
        finally:
            os.close(fd)
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            ppid=int(rest[1]),
            pgrp=int(rest[2]),
            session=int(rest[3]),
            start_time=int(rest[19]),
            state=rest[0].decode(),
        )
    except (IndexError, ValueError):
        return None


def scan() -> dict[int, ProcInfo]:
    """Every process on the host, by pid."""
    table: dict[int, ProcInfo] = {}
    for name in os.listdir(PROC):
        if name.isdigit():
            info = read_stat(int(name))
            if info is not None:
                table[info.pid] = info
    return table


def environ_has(pid: int, entry: bytes) -> bool:
    """True when ``entry`` (``b"NAME=value"``) is one of the process's environment entries."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return entry in data.split(b"\0")


def holds_fd_target(pid: int, target: str) -> bool:
    """True when one of the process's open descriptors is ``target`` (e.g. ``"pipe:[1234]"``)."""
    fd_dir = f"{PROC}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}") == target:
                return True
        except OSError:
            continue
    return False


def process_uids(pid: int) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid of a process (empty when it is gone)."""
    try:
        with open(f"{PROC}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return tuple(int(x) for x in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def send(info: ProcInfo, sig: int) -> bool:
    """Signal one process unless its pid was recycled since ``info`` was read."""
    now = read_stat(info.pid)
    if now is None or now.start_time != info.start_time:
        return False
    try:
        os.kill(info.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ProcessTree:
    """Everything one command started: the leader, its descendants, its group and session.

    ``marker`` (an environment entry such as ``b"TASK_WORKDIR=/tasks/task_x_0"``) also claims
    processes that were re-parented before a poll saw them; ``None`` disables that (multiuser
    uses the uid sweep instead). ``pipe_inode`` (the inode of the command's output pipe) claims
    re-parented processes that still hold that pipe, whatever their environment.
    """

    def __init__(self, leader: int, marker: bytes | None = None, pipe_inode: int | None = None) -> None:
        self.leader = leader
        self.marker = marker
        self._pipe = f"pipe:[{pipe_inode}]" if pipe_inode is not None else None
        self._known: dict[int, int] = {}  # pid -> start time
        info = read_stat(leader)
        # Only processes started after the leader can belong to it: the (costly) environment check
        # is skipped for everything older.
        self._since = info.start_time if info is not None else 0
        if info is not None:
            self._known[leader] = info.start_time
        self._exclude = {1, os.getpid()}

    def refresh(self) -> list[ProcInfo]:
        """Scan ``/proc`` once; remember new members; return the living (non-zombie) members."""
        table = scan()
        members: dict[int, ProcInfo] = {}
        for pid, start in list(self._known.items()):
            info = table.get(pid)
            if info is not None and info.start_time == start:
                members[pid] = info
            else:
                del self._known[pid]
        changed = True
        while changed:  # descendants of members, to any depth
            changed = False
            for info in table.values():
                if info.pid not in members and info.ppid in members and info.pid not in self._exclude:
                    members[info.pid] = info
                    changed = True
        for info in table.values():
            if info.pid in members or info.pid in self._exclude:
                continue
            if info.pgrp == self.leader or info.session == self.leader:
                members[info.pid] = info
            elif info.start_time >= self._since and (
                (self.marker is not None and environ_has(info.pid, self.marker))
                or (self._pipe is not None and holds_fd_target(info.pid, self._pipe))
            ):
                members[info.pid] = info
        for info in members.values():
            self._known[info.pid] = info.start_time
        return [i for i in members.values() if not i.zombie]

    def pids(self) -> list[int]:
        """The members known so far (as of the last ``refresh``, which the command runner does
        within a second of any change): no scan of ``/proc`` here, so the resource monitor can ask
        twice a second for next to nothing."""
        return sorted(self._known)

    def signal(self, sig: int) -> int:
        """Send ``sig`` to every living member (and the process group); return how many got it."""
        members = self.refresh()
        try:
            os.killpg(self.leader, sig)
        except (ProcessLookupError, PermissionError):
            pass
        return sum(1 for info in members if send(info, sig))


async def kill_tree(tree: ProcessTree, attempts: int = 50, pause: float = 0.02) -> int:
    """SIGKILL the tree until a scan finds no living member; return how many are left (0 = clean)."""
    left = 0
    for _ in range(attempts):
        left = await asyncio.to_thread(tree.signal, signal.SIGKILL)
        if left == 0:
            return 0
        await asyncio.sleep(pause)
    left = len(await asyncio.to_thread(tree.refresh))
    if left:
        log.warning("%d process(es) of command %d survived SIGKILL", left, tree.leader)
    return left


def boot_ticks_now() -> int:
    """The current time in the unit of ``ProcInfo.start_time`` (clock ticks since boot)."""
    with open(f"{PROC}/uptime") as f:
        uptime = float(f.read().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def _user_processes(uid: int, since: int = 0) -> list[int]:
    table = scan()
    return [
        pid
        for pid, info in table.items()
        if not info.zombie and info.start_time >= since and uid in process_uids(pid)
    ]


async def kill_user_processes(uid: int, gid: int, timeout: float = 10.0, since: int = 0) -> list[int]:
    """Kill every process whose real, effective or saved uid is ``uid``; return survivors' pids.

    ``kill(-1, SIGKILL)`` issued *as that user* reaches all of its processes in one kernel pass,
    so a fork loop cannot outrun it the way a scan-then-kill loop can; the scan afterwards only
    verifies. Refuses root and the worker's own uid (``kill -1`` there would take down the host).
    ``since`` (clock ticks since boot, see ``boot_ticks_now``) limits the verification scan to
    processes started after it: a shortcut for per-command sweeps, where nothing of the user can
    be older than the user itself.
    """
    if uid == 0 or uid == os.getuid() or uid == os.geteuid():
        raise ValueError(f"refusing to kill every process of uid {uid}")
    # dash/bash builtin ``kill``; procps' /usr/bin/kill mis-parses ``-s KILL -- -1``.
    shell = shutil.which("sh", path="/bin:/usr/bin")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        pids = await asyncio.to_thread(_user_processes, uid, since)
        if not pids:
            return []
        if shell is not None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *runas.as_user([shell, "-c", "kill -9 -1"], uid, gid),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    env={"PATH": "/usr/bin:/bin"},
                    cwd="/",
                )
                await proc.wait()
            except OSError as e:
                log.warning("cannot run %s as uid %d: %s", shell, uid, e)
                shell = None
        if shell is None:
            _kill_pids(pids)
        if loop.time() > deadline:
            survivors = await asyncio.to_thread(_user_processes, uid, since)
            if survivors:
                log.error("processes of uid %d survived SIGKILL: %s", uid, survivors)
            return survivors
        await asyncio.sleep(0.02)


def _kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
