"""Run one command of a task on the host: spawn, stream its output, stop it, leave nothing behind.

Shared by the simple and multiuser engines. The command becomes the leader of a new session and
process group, as the worker's user or another uid/gid/supplementary groups, and joins the task's
cgroup (``tcworker.engines.cgroups``) before it exists. Both are done without forking the ~80 MB
worker (10–35 ms per command here; ``subprocess`` forks for a ``preexec_fn`` or ``user=``): a
``vfork``ed ``perl`` stub (``spawnstub.StubLaunch``) joins the group, drops to the task user where
there is one, and ``execve``s the command, reporting a failed ``execve`` as a start error. A run's
first command usually finds its stub already started and waiting in the run's fresh cgroup
(``parked``, from the engine's ``LaunchPool``): joining a cgroup can cost a kernel RCU grace period
(6–12 ms), paid there before the task was claimed. Later commands get a stub from the pool on
the spot (``park``: cloned by its ``stubforker``, no perl start-up). Where no stub can be used
the child is forked with ``user=`` and a ``preexec_fn`` (one ``os.write`` per hierarchy to
descriptors the worker opened). Nothing the command starts can leave the group.
Combined stdout+stderr go through one pipe, drained (``pipepump``: by the loop while the output is
small, then by a thread of its own) straight
into the ``LogSink`` in chunks of up to 1 MiB (the pipe is enlarged to match), so a task writing
gigabytes costs little more than a redirect to a file, never sits in memory and never occupies
the event loop.

Stopping follows Buildkite's interrupt → grace → kill with a recorded reason (design G7): the
first ``abort`` reason wins; ``MAX_RUN_TIME`` (as in generic-worker) and ``HIGH_MEMORY`` are an
immediate SIGKILL. When
``run`` returns — normal exit, abort or cancellation of the awaiting coroutine — every process the
command started has been killed (``proctree``); with a cgroup, the group is killed as a whole too
and the limits it hit are reported in ``ProcessResult.limit_hits``. The optional ``sweep`` hook
(the multiuser engine's kill-every-process-of-the-task-user, a pass over ``/proc``) is started
then and finishes in the background: the next command waits for it before it starts, and so
must anything else that starts a process as the task user (``settle``), but the run's last
command does not make the task's log upload and report wait for it. The child is reaped with ``os.wait4``
through a pidfd, which gives its user/system CPU time without a thread per command.

A trivial command's own cost in the worker is a few hundred microseconds of the event loop's time,
so the path keeps it that way: one future is woken by the exit or by ``abort`` (no task per
command for either), the first poll of the process tree is a timer that a short command cancels
before it fires, and the usual end — leader reaped, the task's cgroup empty, the pipe at EOF — is
finished inline instead of in a shielded task (``_finish_at_once``); anything else takes the full
``_finish``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcworker.engines import spawnstub
from tcworker.engines.base import EXIT_ABORTED, EXIT_NOT_STARTED, CancelReason, LogSink, ProcessResult
from tcworker.engines.cgroups import TaskCgroup
from tcworker.engines.pipepump import READ_SIZE, PipePump
from tcworker.engines.proctree import ProcessTree, kill_tree

log = logging.getLogger(__name__)

PIPE_SIZE = READ_SIZE
EXIT_UNDETERMINED = -3  # generic-worker's code when the exit status cannot be known
# Polls of the process tree while a command runs: frequent at first (short-lived escapees),
# then once a second (each poll is one pass over /proc).
POLL_INTERVALS = (0.02, 0.05, 0.1, 0.25, 0.5)
POLL_STEADY = 1.0
EOF_WAIT = 2.0  # after the tree is dead, how long to wait for the pipe's end


@dataclass(frozen=True)
class Identity:
    """Who a command runs as; ``groups`` are the supplementary groups (replacing the worker's)."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _exit_waiter(pid: int) -> asyncio.Future[tuple[int, resource.struct_rusage]]:
    """A future for ``os.wait4(pid)``: pidfd readiness on the loop, a thread as fallback."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return asyncio.ensure_future(_wait_in_thread(pid))
    fut: asyncio.Future[tuple[int, resource.struct_rusage]] = loop.create_future()

    def ready() -> None:
        try:
            wpid, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError as e:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not fut.done():
                fut.set_exception(e)
            return
        if wpid == 0:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not fut.done():
            fut.set_result((status, usage))

    loop.add_reader(pidfd, ready)
    return fut


async def _wait_in_thread(pid: int) -> tuple[int, resource.struct_rusage]:
    _, status, usage = await asyncio.to_thread(os.wait4, pid, 0)
    return status, usage


class CommandRunner:
    """Runs a sandbox's commands one at a time and stops them on ``abort``.

    ``grace`` is the time between SIGTERM and SIGKILL for reasons other than max run time.
    ``sweep`` is started after each command once its tree is dead (multiuser: kill every process
    of the task user) and awaited by ``settle``, which every later command calls first.
    ``cgroup`` is the task's group, which every command joins before ``exec``.
    """

    def __init__(
        self,
        grace: float = 3.0,
        sweep: Callable[[], Awaitable[object]] | None = None,
        cgroup: TaskCgroup | None = None,
        parked: spawnstub.StubLaunch | None = None,
        park: Callable[[Sequence[Path]], spawnstub.StubLaunch] | None = None,
    ) -> None:
        self.grace = grace
        self._parked = parked
        self._park = park  # blocking: a stub joining these cgroup.procs (the engine's LaunchPool.park)
        self._sweep = sweep
        self._sweeping: asyncio.Future[object] | None = None  # the last command's sweep
        self._cgroup = cgroup
        self._reason: CancelReason | None = None
        self._wake: asyncio.Future[None] | None = None  # the running command's: exit or abort
        self._tree: ProcessTree | None = None  # the running command's, while one runs

    @property
    def cancel_reason(self) -> CancelReason | None:
        return self._reason

    def running_pids(self) -> list[int] | None:
        """Pids of the running command's process tree; ``None`` between commands. Blocking."""
        tree = self._tree
        return tree.pids() if tree is not None else None

    async def settle(self) -> None:
        """Wait until the last command's sweep is over: call before starting any process that
        the sweep would kill (one of the task user's). Raises what the sweep raised."""
        sweeping = self._sweeping
        if sweeping is not None:
            await asyncio.shield(sweeping)
            self._sweeping = None

    def abort(self, reason: CancelReason) -> None:
        """Record ``reason`` (the first one wins) and stop the running command, if any."""
        if self._reason is None:
            self._reason = reason
        _wake(self._wake)

    async def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        sink: LogSink,
        identity: Identity | None = None,
        marker: bytes | None = None,
    ) -> ProcessResult:
        """Run ``argv`` in ``cwd`` with exactly ``env``; see the module docstring."""
        started = time.monotonic()
        await self.settle()
        if self._reason is not None:
            return ProcessResult(EXIT_ABORTED, cancel_reason=self._reason)
        loop = asyncio.get_running_loop()
        try:
            popen, read_fd, launch = await self._start(argv, env, cwd, identity)
        except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError) as e:
            return ProcessResult(
                EXIT_NOT_STARTED,
                start_error=_start_error_message(argv, e),
                wall_time=time.monotonic() - started,
            )
        pipe_inode = os.fstat(read_fd).st_ino
        tree = ProcessTree(popen.pid, marker, pipe_inode)
        self._tree = tree
        exited = _exit_waiter(popen.pid)
        pump: PipePump | None = None
        # The first poll of the tree is a timer, not a task: a command that ends before it (most
        # do) costs no task to create and cancel.
        polling: list[asyncio.Task[None]] = []
        first_poll = loop.call_later(
            POLL_INTERVALS[0], lambda: polling.append(asyncio.ensure_future(self._poll(tree, exited)))
        )
        interrupted = False
        try:
            pump = PipePump(read_fd, sink, loop)
            # One future for "the command ended or was aborted", woken by both (no task per command).
            wake: asyncio.Future[None] = loop.create_future()
            self._wake = wake
            exited.add_done_callback(lambda _: _wake(wake))
            if self._reason is not None:  # aborted while the command was being started
                _wake(wake)
            await wake
            if not exited.done():
                interrupted = True
                await self._stop(tree, exited)
        except asyncio.CancelledError:
            interrupted = True
            await asyncio.shield(self._stop(tree, exited))
            raise
        finally:
            self._tree = None
            self._wake = None
            first_poll.cancel()
            for poller in polling:
                poller.cancel()
            # The usual end (leader reaped, its cgroup empty, the pipe at EOF) is finished here
            # and now; anything else waits, shielded from our own cancellation.
            if not self._finish_at_once(tree, exited, pump, read_fd):
                await asyncio.shield(self._finish(tree, exited, pump, read_fd))
            popen.returncode = _returncode(exited)  # Popen must never waitpid() a recycled pid
            start_error = launch.start_error() if launch is not None and exited.done() else None
            if launch is not None:
                launch.close()
        if start_error is not None:  # the stub never became the command
            return ProcessResult(
                EXIT_NOT_STARTED,
                start_error=_start_error_message(argv, start_error),
                wall_time=time.monotonic() - started,
            )
        reason = self._reason if interrupted else None
        if exited.cancelled() or exited.exception() is not None:  # not our child any more: undetermined
            return ProcessResult(
                EXIT_UNDETERMINED, cancel_reason=reason, wall_time=time.monotonic() - started
            )
        status, usage = exited.result()
        exit_code, sig = _decode_status(status)
        hits = tuple(h.message for h in self._cgroup.new_limit_hits()) if self._cgroup is not None else ()
        return ProcessResult(
            exit_code=EXIT_ABORTED if reason is not None else exit_code,
            signal=sig,
            cancel_reason=reason,
            user_time=usage.ru_utime,
            system_time=usage.ru_stime,
            wall_time=time.monotonic() - started,
            limit_hits=hits,
        )

    async def _start(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, identity: Identity | None
    ) -> tuple[spawnstub.ChildHandle, int, spawnstub.StubLaunch | None]:
        """Start the command: ``(process, read end of its output pipe, its stub or None)``.
        Raises the start error. The first command of a run hands its request to the stub parked
        in the run's cgroup, if it got one (``LaunchPool``); the others get a stub from the
        engine's pool on the spot (cloned by its forker: no perl start-up on their path), or else
        spawn one (``vfork``) that joins the group itself; without a usable stub, the worker forks
        as before."""
        # uid 0 with other ids (never used by the engines today) is left to subprocess's fork
        stub = spawnstub.launch_available() and not (identity is not None and identity.uid == 0)
        user = spawnstub.TaskUser(identity.uid, identity.gid, identity.groups) if identity else None
        parked, self._parked = self._parked, None
        if parked is not None and stub and parked.waiting():
            if await _hand_over(parked, argv, env, cwd, user):
                return parked.popen, parked.output, parked
        elif parked is not None:  # died while parked: never mind it
            await parked.discard()
        if stub and self._cgroup is not None and self._park is not None:
            fresh = await self._stub_on_the_spot([d / "cgroup.procs" for d in self._cgroup.dirs])
            if fresh is not None and await _hand_over(fresh, argv, env, cwd, user):
                return fresh.popen, fresh.output, fresh
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        join_fds: list[int] = []
        try:
            if stub and (self._cgroup is not None or user is not None):
                procs = [d / "cgroup.procs" for d in self._cgroup.dirs] if self._cgroup is not None else []
                launch = spawnstub.StubLaunch.start(argv, env, cwd, user, procs, **self._popen_io(write_fd))
                return launch.popen, read_fd, launch
            join = None
            if self._cgroup is not None:
                join_fds, join = self._cgroup.joiner()
            return self._spawn(argv, env, cwd, write_fd, identity, join), read_fd, None
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            for fd in join_fds:
                os.close(fd)

    async def _stub_on_the_spot(self, procs: list[Path]) -> spawnstub.StubLaunch | None:
        """A stub from ``park`` (a thread trip: it waits for the forker), or ``None`` when none
        can be had that way. Cancelled meanwhile, the stub the thread still makes is ended and
        reaped, not left waiting."""
        assert self._park is not None
        making = asyncio.ensure_future(asyncio.to_thread(self._park, procs))
        try:
            return await asyncio.shield(making)
        except OSError:
            return None
        except asyncio.CancelledError:
            await asyncio.shield(_discard_when_made(making))
            raise

    async def discard_parked(self) -> None:
        """End the parked stub if no command used it (a run without commands, or cancelled)."""
        parked, self._parked = self._parked, None
        if parked is not None:
            await parked.discard()

    @staticmethod
    def _popen_io(out_fd: int) -> dict[str, Any]:
        """What every command gets: no stdin, stdout+stderr into the pipe, its own session."""
        return {
            "stdin": subprocess.DEVNULL,
            "stdout": out_fd,
            "stderr": subprocess.STDOUT,
            "start_new_session": True,
            "close_fds": True,
        }

    @classmethod
    def _spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        out_fd: int,
        identity: Identity | None,
        join_cgroup: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # argv comes from the task payload by design
            list(argv),
            cwd=cwd,
            env=dict(env),
            **cls._popen_io(out_fd),
            user=identity.uid if identity is not None else None,
            group=identity.gid if identity is not None else None,
            extra_groups=list(identity.groups) if identity is not None else None,
            preexec_fn=join_cgroup,  # only ever os.write on inherited descriptors (see the docstring)
        )

    async def _poll(
        self, tree: ProcessTree, exited: asyncio.Future[tuple[int, resource.struct_rusage]]
    ) -> None:
        """Remember descendants while the command runs, so that ones which later leave the
        session or get re-parented are still known when the tree is killed. Started by a timer
        ``POLL_INTERVALS[0]`` after the command (``run``), so it scans first."""
        intervals = iter(POLL_INTERVALS[1:])
        while not exited.done():
            await asyncio.to_thread(tree.refresh)
            await asyncio.sleep(next(intervals, POLL_STEADY))

    async def _stop(
        self, tree: ProcessTree, exited: asyncio.Future[tuple[int, resource.struct_rusage]]
    ) -> None:
        """Interrupt → grace → kill (max run time and high memory: kill at once)."""
        if not (self._reason is not None and self._reason.kill_at_once) and self.grace > 0:
            await asyncio.to_thread(tree.signal, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), self.grace)
        await self._kill_cgroup()
        await kill_tree(tree)

    async def _kill_cgroup(self) -> None:
        """Kill every process in the task's cgroup (what no process tree scan can miss)."""
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.kill)

    def _finish_at_once(
        self,
        tree: ProcessTree,
        exited: asyncio.Future[tuple[int, resource.struct_rusage]],
        pump: PipePump | None,
        read_fd: int,
    ) -> bool:
        """``_finish`` without a wait, when there is nothing to wait for: the leader reaped, the
        task's cgroup empty (every process the command started joined it before it could run a
        line of its own, so no /proc scan can find anything) and its output pipe at EOF. The
        common end of a command: it saves the task, the timer and the loop iterations of the
        shielded ``_finish``. ``False``: nothing was done, ``_finish`` does it all."""
        if not exited.done() or pump is None or not pump.eof.done() or self._cgroup is None:
            return False
        if self._cgroup.pids():
            return False
        self._start_sweep()
        pump.close()  # at EOF: the thread, if one took over, has ended
        return True

    def _start_sweep(self) -> None:
        if self._sweep is not None:  # finishes in the background (module docstring)
            self._sweeping = asyncio.ensure_future(self._sweep())

    async def _finish(
        self,
        tree: ProcessTree,
        exited: asyncio.Future[tuple[int, resource.struct_rusage]],
        pump: PipePump | None,
        read_fd: int,
    ) -> None:
        """After the leader is done: kill what is left, reap, drain the pipe, close it."""
        if not exited.done():
            await self._kill_cgroup()
            await kill_tree(tree)
        with contextlib.suppress(Exception):
            await exited
        if self._cgroup is None or self._cgroup.pids():
            await self._kill_cgroup()
            await kill_tree(tree)
        # else: the task's cgroup is empty, and every process the command started joined it
        # before it could run a line of its own, so there is nothing left for a /proc scan to
        # find (the common case: it saves a scan of every process on the host per command).
        self._start_sweep()
        if pump is None:  # never got as far as reading
            os.close(read_fd)
            return
        if not pump.eof.done():
            try:
                await asyncio.wait_for(asyncio.shield(pump.eof), EOF_WAIT)
            except TimeoutError:
                log.warning(
                    "output pipe of command %d still open after its processes were killed", tree.leader
                )
        # Joins the pump thread, so every chunk has reached the sink before ``run`` returns
        # (at EOF the thread has already ended, and a small output never had one: no thread
        # trip for the common case).
        if pump.eof.done() or not pump.threaded:
            pump.close()
        else:
            await asyncio.to_thread(pump.close)


async def _hand_over(
    stub: spawnstub.StubLaunch,
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    user: spawnstub.TaskUser | None,
) -> bool:
    """Send a waiting stub its command: ``True`` once it has it; ``False`` when it died before
    (EPIPE: it is reaped, and the caller starts the command another way). A bad request (nothing
    sent) or a cancellation while sending it ends the stub before it can start anything."""
    try:
        await stub.send(argv, env, cwd, user)
    except OSError:
        await stub.discard()
        return False
    except BaseException:
        await stub.abandon()
        raise
    return True


async def _discard_when_made(making: asyncio.Future[spawnstub.StubLaunch]) -> None:
    try:
        stub = await making
    except Exception:
        return
    await stub.discard()


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _returncode(exited: asyncio.Future[tuple[int, resource.struct_rusage]]) -> int:
    if exited.done() and not exited.cancelled() and exited.exception() is None:
        code, sig = _decode_status(exited.result()[0])
        return -sig if sig is not None else code
    return -1


def _decode_status(status: int) -> tuple[int, int | None]:
    """``(exit code, signal)``; a signal death is exit code -1 as in Go's ``ExitCode()``."""
    if os.WIFSIGNALED(status):
        return -1, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return -1, None


def _start_error_message(argv: Sequence[str], error: BaseException) -> str:
    name = argv[0] if argv else "<empty command>"
    if isinstance(error, FileNotFoundError):
        return (
            f"could not start command {name!r}: no such file or directory (not found in PATH or cwd missing)"
        )
    if isinstance(error, PermissionError):
        return f"could not start command {name!r}: permission denied (not executable?)"
    if isinstance(error, OSError) and error.strerror:
        return f"could not start command {name!r}: {error.strerror}"
    return f"could not start command {name!r}: {error}"
