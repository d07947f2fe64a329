"""Parked command stubs made by one long-lived perl instead of a perl started for each.

A parked stub (``spawnstub.StubLaunch.park``) is a fresh ``perl -e`` that starts, compiles the
stub and waits for its command. ``bench/launch.py`` measured here, per run, in every process:
5.0–5.2 ms of CPU for a spawned stub (its perl's start-up, the stub's compilation, the cgroup
join, then ``true`` itself, which alone is ~1.1 ms) against 2.2–2.4 ms for a cloned one plus
0.5–0.6 ms in the forker, and ~0.1 ms less in the worker — ~2.3 ms per run, about a tenth of
the CPU a trivial task costs the worker, its children and the platform together, on cores the
next task needs. The command's start is no slower (0.07–0.16 ms faster at the median).

The forker is one perl per worker that compiled the stub once and loads no module (raw system
calls instead of POSIX's: with POSIX loaded, every clone's ``execve`` had more to drop and the
command started ~0.3 ms later than from a spawned stub). For each stub it makes the three
pipes and calls the raw ``clone`` system call with ``CLONE_PARENT``: the new process is a copy of
the forker — the stub already compiled — whose parent is the **worker**, not the forker, so
everything ``CommandRunner`` does with a child (pidfd, ``wait4`` and its rusage for the footer,
signals) works exactly as for a spawned stub (``spawnstub``'s reason for refusing a spawner
process does not apply). The child then does what ``StubLaunch.park`` gives a spawned one: its
own session, ``/dev/null`` as stdin, stdout and stderr on the output pipe, nothing else open but
the request pipe and the close-on-exec report pipe, the same empty environment, and runs the
same stub code (joins the group, reads its request, drops to the task user, ``execve``).

Perl's core cannot pass a descriptor over a socket, so the worker takes its ends of the pipes by
opening ``/proc/<forker>/fd/N`` (a pipe opened there is the same pipe) and then tells the forker to
close its copies; until then the forker keeps the request pipe's read end too, so that the
worker's open never fails because the stub died meanwhile (a stub that ended before its request
is found out by ``waiting()``, as a spawned one). The forker holds nothing of any request: those
go from the worker straight to the stub.

The control protocol (worker → forker, on a pipe; replies one line each):
``P<8-digit length><cgroup.procs paths, NUL-separated>`` makes a stub and replies
``<pid> <request fd> <output fd> <report fd>`` or ``E <errno>``; ``C00000000`` closes the copies
of the last stub's pipes. The forker says ``R`` once it has started; the end of the control pipe
(the worker closed it, or died) ends it. Where the forker cannot start or stops answering,
``LaunchPool`` spawns each stub on its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tcworker.engines import spawnstub

# (clone, setsid, exit_group) per ``os.uname().machine``: raw system calls, so that the forker
# loads no module (every page it has, each clone has to copy or share, and its ``execve`` to drop).
# clone's flags come first; its other arguments are all 0 here, so their order, which differs
# between architectures, does not matter.
_SYSCALLS: dict[str, tuple[int, int, int]] = {
    "x86_64": (56, 112, 231),
    "aarch64": (220, 157, 94),
    "riscv64": (220, 157, 94),
}
_CLONE_PARENT = 0x00008000
_SIGCHLD = 17  # the child's exit signal: the worker hears of it as of any child
REPLY_TIMEOUT = 5.0  # a forker that does not answer within this is given up

_FORKER = (
    spawnstub.STUB_SUB
    + r"""
my ($ctlfd, $replyfd, $nclone, $flags, $nsetsid, $nexit, @sys) = @ARGV;
sub quit { syscall(0 + $nexit, 0 + $_[0]) }
open(my $ctl, "<&=", $ctlfd) or quit(126);
open(my $reply, ">&=", $replyfd) or quit(126);
fcntl($ctl, 2, 1) or quit(126);
fcntl($reply, 2, 1) or quit(126);
sub readn {
  my ($n) = @_; my $b = "";
  while (length($b) < $n) { my $got = sysread($ctl, $b, $n - length($b), length $b); return undef unless $got }
  return $b;
}
my @held;
syswrite($reply, "R\n") or quit(126);
while (defined(my $head = readn(9))) {
  my ($op, $len) = (substr($head, 0, 1), substr($head, 1));
  $len =~ /^[0-9]{8}\z/ or last;
  my $body = $len > 0 ? readn(0 + $len) : "";
  defined $body or last;
  close($_) for @held; @held = ();
  next if $op eq "C";
  last if $op ne "P";
  my @join = length($body) ? split(/\0/, $body, -1) : ();
  my ($qr, $qw, $or, $ow, $rr, $rw);
  unless (pipe($qr, $qw) && pipe($or, $ow) && pipe($rr, $rw)) {
    my $e = $! + 0; close($_) for grep { defined } ($qr, $qw, $or, $ow, $rr, $rw);
    syswrite($reply, "E $e\n"); next;
  }
  my $pid = syscall(0 + $nclone, 0 + $flags, 0, 0, 0, 0);
  if ($pid == 0) {
    close($ctl); close($reply); close($qw); close($or); close($rr);
    syscall(0 + $nsetsid) > 0 or quit(126);
    # reopening a standard handle keeps its descriptor (0, 1, 2)
    open(STDIN, "<", "/dev/null") or quit(126);
    open(STDOUT, ">&", $ow) or quit(126);
    open(STDERR, ">&", $ow) or quit(126);
    close($ow);
    stub(fileno($qr), fileno($rw), @sys, scalar(@join), @join);
    quit(127);
  }
  my $e = $! + 0;
  close($ow); close($rw);
  if ($pid < 0) { close($_) for ($qr, $qw, $or, $rr); syswrite($reply, "E $e\n"); next }
  @held = ($qw, $or, $rr, $qr);
  syswrite($reply, join(" ", $pid, map { fileno($_) } $qw, $or, $rr) . "\n");
}
"""
)


def forker_available() -> bool:
    """Whether a forker can work here: the stub can, and the ``clone`` number is known."""
    return spawnstub.launch_available() and os.uname().machine in _SYSCALLS


class ForkerGone(OSError):
    """The forker died or stopped answering: stubs are spawned on their own from now on."""


class ChildProcess:
    """What ``StubLaunch`` needs of ``subprocess.Popen`` (``pid``, ``returncode``, ``poll``,
    ``wait``, ``kill``) for a child of ours that ``subprocess`` did not start. Same rules as
    ``Popen``: ``poll`` and ``wait`` reap it; signals go only to a child not yet reaped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere: as Popen says then
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.poll() is None:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired([str(self.pid)], timeout)
                time.sleep(0.005)
            assert self.returncode is not None
            return self.returncode
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class StubForker:
    """One forker process (see the module docstring); ``park`` is safe from several threads."""

    def __init__(self, popen: subprocess.Popen[bytes], control: int, replies: int) -> None:
        self._popen = popen
        self._control = control
        self._replies = replies
        self._lock = threading.Lock()
        self._gone = False

    @classmethod
    def start(cls) -> StubForker:
        """Start the forker (``vfork`` of one perl). Raises ``OSError`` when it cannot."""
        setgroups, setresgid, setresuid, execve = spawnstub.syscall_numbers()
        clone, setsid, exit_group = _SYSCALLS[os.uname().machine]
        control_r, control_w = os.pipe2(os.O_CLOEXEC)
        replies_r, replies_w = os.pipe2(os.O_CLOEXEC)
        try:
            popen = subprocess.Popen(
                [
                    spawnstub.PERL, "-e", _FORKER, "--", str(control_r), str(replies_w),
                    str(clone), str(_CLONE_PARENT | _SIGCHLD), str(setsid), str(exit_group),
                    str(setgroups), str(setresgid), str(setresuid), str(execve),
                ],  # fmt: skip
                env={},
                cwd="/",
                pass_fds=(control_r, replies_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's signals are for the worker, not for it
            )
        except BaseException:
            spawnstub.close_fds(control_w, replies_r)
            raise
        finally:
            spawnstub.close_fds(control_r, replies_w)
        forker = cls(popen, control_w, replies_r)
        try:
            ready = forker._reply()
        except OSError as e:
            forker.close(timeout=0)
            raise OSError(e.errno, f"the stub forker did not start: {e.strerror}") from e
        if ready != b"R\n":
            forker.close(timeout=0)
            raise OSError(errno.EPROTO, f"the stub forker did not start: it said {ready!r}")
        return forker

    @property
    def pid(self) -> int:
        return self._popen.pid

    def park(self, join: Sequence[Path], output_pipe_size: int) -> spawnstub.StubLaunch:
        """A stub that joins ``join`` and waits for its request, as ``StubLaunch.park`` makes
        one. Raises ``ForkerGone`` when the forker is unusable, ``OSError`` when it could not
        make this stub (no pipe, no process)."""
        body = b"\0".join(os.fsencode(p) for p in join)
        with self._lock:
            if self._gone:
                raise ForkerGone(errno.EPIPE, "the stub forker has ended")
            try:
                spawnstub.write_all(self._control, b"P%08d" % len(body) + body)
                reply = self._reply()
            except OSError as e:
                self._gone = True
                raise ForkerGone(e.errno or errno.EPIPE, f"the stub forker stopped answering: {e}") from e
            fields = reply.split()
            if fields[:1] == [b"E"]:
                code = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else errno.EAGAIN
                raise OSError(code, f"cannot make a parked stub: {os.strerror(code)}")
            try:
                pid, request_fd, output_fd, report_fd = map(int, fields)
            except ValueError:
                self._gone = True
                raise ForkerGone(errno.EPROTO, f"the stub forker answered {reply!r}") from None
            child = ChildProcess(pid)
            try:
                return self._take_pipes(child, request_fd, output_fd, report_fd, output_pipe_size)
            except BaseException as e:
                child.kill()
                child.wait()
                if not isinstance(e, OSError):
                    raise
                self._gone = True  # /proc/<forker>/fd closed to us (hidepid, no ptrace access)?
                raise ForkerGone(e.errno or errno.EIO, f"cannot take a stub's pipes from the forker: {e}") from e
            finally:
                with contextlib.suppress(OSError):
                    spawnstub.write_all(self._control, b"C00000000")

    def _take_pipes(
        self, child: ChildProcess, request_fd: int, output_fd: int, report_fd: int, output_pipe_size: int
    ) -> spawnstub.StubLaunch:
        """Our own descriptors for the stub's pipes, opened through the forker's; flags as
        ``StubLaunch.park`` has them (blocking request and output, non-blocking report)."""
        opened: list[int] = []
        try:
            for fd, mode in ((request_fd, os.O_WRONLY), (output_fd, os.O_RDONLY), (report_fd, os.O_RDONLY)):
                opened.append(
                    os.open(f"/proc/{self.pid}/fd/{fd}", mode | os.O_CLOEXEC | os.O_NONBLOCK)
                )
            request_w, out_r, report_r = opened
            for fd in (request_w, out_r):
                os.set_blocking(fd, True)
            return spawnstub.StubLaunch.from_pipes(child, request_w, out_r, report_r, output_pipe_size)
        except BaseException:
            spawnstub.close_fds(*opened)
            raise

    def _reply(self) -> bytes:
        """One reply line; ``OSError`` when the forker ended or did not answer in time."""
        line = b""
        deadline = time.monotonic() + REPLY_TIMEOUT
        poller = select.poll()
        poller.register(self._replies, select.POLLIN)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise OSError(errno.ETIMEDOUT, "no answer")
            chunk = os.read(self._replies, 256)
            if not chunk:
                raise OSError(errno.EPIPE, "it has ended")
            line += chunk
        return line

    def close(self, timeout: float = 5.0) -> None:
        """End the forker (end of its control pipe) and reap it; blocking. Stubs it made are
        the worker's children and live on."""
        with self._lock:
            self._gone = True
            spawnstub.close_fds(self._control, self._replies)
            self._control = self._replies = -1
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
