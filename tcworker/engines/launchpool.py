"""Runs' cgroups made ahead of time, each with the stub of its first command already waiting in it.

A host run needs a fresh cgroup with the task limits, and its first command must join it before
it exists. Joining is the expensive part when it is rare: the first ``cgroup.procs`` write after
a quiet spell waits for a kernel RCU grace period (6–12 ms measured here), and perl's start-up
adds ~2 ms — all on the path from claim to resolution of every task. So the engine keeps a few
``(cgroup, parked stub)`` pairs ready (``spawnstub.StubLaunch.park``): the stub has joined its
group and waits for its command, which ``CommandRunner`` sends it. A pair is made when the worker
starts and again after a run is over (``top_up``), never on a task's path; a run that finds the
pool empty (more runs at once than the pool holds) makes its cgroup and stub as before.

A group is named like any run's (``task_ready_<random>-w<worker pid>``), so the removal of a dead
worker's groups covers these too; a parked stub whose worker is gone reads an empty request and
ends. Never reused: each pair serves one run, and what is left of it goes with the run's group.

The stubs come from one ``stubforker.StubForker`` (a perl that has compiled the stub once and
clones a copy of itself per stub, ~2.3 ms of CPU less per stub than a perl started for each);
``park`` also gives a run's later commands theirs, in the run's own group. Where the forker cannot
start, or stops answering, each stub is spawned on its own as before.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

from tcworker.engines import cgroups, spawnstub, stubforker

log = logging.getLogger(__name__)

MAX_SIZE = 16  # parked stubs per worker (each ~2–3 MB of memory while it waits)


class LaunchPool:
    """Up to ``size`` ready ``(cgroup, stub)`` pairs of one worker."""

    def __init__(
        self,
        host: cgroups.CgroupHost,
        limits: cgroups.TaskLimits,
        size: int,
        pipe_size: int,
        *,
        forker: bool = True,
    ) -> None:
        """``forker=False``: every stub spawned on its own perl (``bench/launch.py``'s baseline)."""
        self._host = host
        self._limits = limits
        self._size = max(0, min(size, MAX_SIZE))
        self._pipe_size = pipe_size
        self._ready: list[tuple[cgroups.TaskCgroup, spawnstub.StubLaunch]] = []
        self._broken = False
        # top_up runs in the thread of a run's clean-up (several at once at capacity > 1) while
        # take() pops on the loop: list append/pop are atomic; the lock keeps two top-ups from
        # overfilling the pool and one from adding a pair after close().
        self._filling = threading.Lock()
        self._forker: stubforker.StubForker | None = None
        self._forking = threading.Lock()  # starting or dropping the forker (``park`` is called from many threads)
        self._forker_tried = not forker

    def take(self) -> tuple[cgroups.TaskCgroup, spawnstub.StubLaunch] | None:
        """A ready pair for one run (its stub still waiting), or ``None``."""
        while self._ready:
            group, stub = self._ready.pop()
            if stub.waiting():
                return group, stub
            log.warning(
                "a parked command stub ended before use (exit %s); not using it", stub.popen.returncode
            )
            stub.drop()
            self._discard_group(group)
        return None

    def top_up(self) -> None:
        """Make pairs until the pool is full: a few ``mkdir`` and limit writes and one ``vfork``
        each (perl's start-up and the cgroup join happen in the child, not here). After one
        failure the pool stays empty: runs make their own groups, as without it. Blocking: the
        engine calls it at start and from a run's clean-up (on the loop or in a thread). A top-up
        already under way (another run's, in a thread) fills the pool to its size itself: this
        one returns at once then, never waiting for it on the loop."""
        if not self._filling.acquire(blocking=False):
            return
        try:
            self._fill()
        finally:
            self._filling.release()

    def _fill(self) -> None:
        while not self._broken and len(self._ready) < self._size:
            name = cgroups.group_name(f"task_ready_{secrets.token_hex(6)}")
            try:
                group = self._host.create(name, self._limits)
            except OSError as e:
                self._give_up(f"cannot create cgroup {name}: {e}")
                return
            try:
                stub = self.park([d / "cgroup.procs" for d in group.dirs])
            except OSError as e:
                self._discard_group(group)
                self._give_up(f"cannot start a command stub: {e}")
                return
            self._ready.append((group, stub))

    def park(self, join: Sequence[Path]) -> spawnstub.StubLaunch:
        """A stub that joins ``join`` (a run's own group) and waits for its request: from the
        forker (started on first use), else spawned on its own. Blocking; safe from any thread.
        A run's later commands get theirs here, on the spot. Raises ``OSError``."""
        with self._forking:
            if not self._forker_tried:
                self._forker_tried = True
                if stubforker.forker_available():
                    try:
                        self._forker = stubforker.StubForker.start()
                    except OSError as e:
                        log.warning("command stub forker not started (%s); each stub starts its own perl", e)
            forker = self._forker
        if forker is not None:
            try:
                return forker.park(join, self._pipe_size)
            except stubforker.ForkerGone as e:
                with self._forking:
                    lost = self._forker is forker
                    if lost:
                        self._forker = None
                if lost:
                    log.warning("command stub forker lost (%s); each stub starts its own perl from now on", e)
                    forker.close()
        return spawnstub.StubLaunch.park(join, self._pipe_size)

    async def close(self) -> None:
        """End every parked stub and remove its group, then the forker (worker shutdown)."""
        with self._filling:  # a top-up under way finishes first; none adds anything after this
            self._broken = True
            ready, self._ready = self._ready, []
            with self._forking:  # later ``park`` calls spawn their stubs
                forker, self._forker, self._forker_tried = self._forker, None, True
        for group, stub in ready:
            await stub.discard()
            self._discard_group(group)
        if forker is not None:
            await asyncio.to_thread(forker.close)

    def _give_up(self, why: str) -> None:
        self._broken = True
        log.warning("ready cgroups for the next runs disabled (%s); each run makes its own", why)

    @staticmethod
    def _discard_group(group: cgroups.TaskCgroup) -> None:
        if not group.remove_if_empty():
            group.remove()
