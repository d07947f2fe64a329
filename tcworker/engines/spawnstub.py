"""Start a task command with ``vfork``, in the task's cgroup, without forking the worker.

CPython's ``subprocess`` uses ``vfork`` only when the child needs no Python code and keeps the
parent's uid: a ``preexec_fn`` (joining the task's cgroup before ``exec``) or ``user=`` makes it
``fork`` the whole worker instead. On this kind of machine that costs 10–35 ms per command for a
~80 MB worker (the child and the parent fault in copy-on-write pages until the child execs),
against ~0.4 ms for ``vfork`` — more than everything else a trivial task costs the worker.

So the child ``exec``s a small program first, one ``/usr/bin/perl -e`` (Debian's Essential
``perl-base``; ``/bin/sh`` would add ``PWD`` to the task's environment), which:

- starts with an **empty environment** (nothing of the task — no ``LD_*``, no ``PERL*`` — reaches
  a process that may be root) and loads no module;
- joins the task's cgroup(s) (writes ``0`` to each ``cgroup.procs``), before the command exists;
- reads its *request* from an inherited descriptor: the mode, the user, the working directory,
  the candidate paths, the command's argv and its environment — never argv of the stub, never a
  file on disk. The request starts with its length, so the stub goes on as soon as all of it is
  there (not when the writer closes the pipe: no second wake-up on the first command's path), and
  one cut short — its worker died while writing it — starts nothing;
- in ``user`` mode (the multiuser engine; the stub runs as root) drops **all** privilege with raw
  system calls: ``setgroups`` (exactly the task's groups, none of root's), ``setresgid`` and
  ``setresuid`` (real, effective and saved ids; Perl's ``$<``/``$)`` variables leave saved ids
  behind in some orders and cannot empty the group list), and verifies in ``/proc/self/status``
  that every uid and gid is the task's, the groups are exactly the task's and no capability is
  left, else it refuses to go on; in ``keep`` mode (the simple engine) it stays the worker's user;
- enters the working directory (with the task user's rights) and calls ``execve`` (the raw
  system call: no ``execvp`` falling back to ``/bin/sh`` for a file without ``#!``) on each
  candidate path the worker computed from the task's ``PATH`` exactly as ``subprocess`` does,
  with exactly the task's environment, and reports the first telling ``errno`` (as
  ``subprocess`` does) on a close-on-exec pipe. An exec that succeeds closes the pipe empty; the
  worker reads it once the process has ended, so a start error is still a start error
  (``FileNotFoundError``, ``PermissionError``, ``ENOEXEC``), judged with the task user's rights,
  and a command that starts costs no extra wait.

The request reaches the stub in one of two ways. ``StubLaunch.start``: in a sealed ``memfd``
written before the spawn. ``StubLaunch.park``: through a pipe written *later* — the stub is
started ahead of time, joins its cgroup and waits; ``send`` hands it the command when there is
one. That is what the engines' ``LaunchPool`` keeps ready, because joining a cgroup is not cheap
when it is rare: the first write to a ``cgroup.procs`` after a quiet spell waits for an RCU grace
period in the kernel (the cgroup threadgroup lock switching to its writer mode), measured here at
6–12 ms per command after 50 ms or more without a migration, ~0.1 ms back to back. A parked stub
pays that, and perl's own start-up (~2 ms), while no task is waiting for it.

Chosen over a spawner process (its children would not be the worker's, so no ``wait4`` rusage, no
pidfd of our own child) and ``clone3(CLONE_INTO_CGROUP)`` (needs code between clone and exec, which
Python cannot run safely, and covers cgroup v2 only) because it keeps every other property of
the runner and is one small, auditable program. The system call numbers are per machine
(``_SYSCALLS``); elsewhere ``launch_available`` is false and the caller forks as before.
``run_as_user`` starts the multiuser engine's short helper commands (the chain-of-trust read
check, a mount point's ``mkdir``) the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PERL = "/usr/bin/perl"  # perl-base is Essential on Debian; /bin/sh would add PWD to the env

# (setgroups, setresgid, setresuid, execve) with 32-bit ids, per ``os.uname().machine``.
_SYSCALLS: dict[str, tuple[int, int, int, int]] = {
    "x86_64": (116, 119, 117, 59),
    "aarch64": (159, 149, 147, 221),  # the generic table (asm-generic/unistd.h)
    "riscv64": (159, 149, 147, 221),
}
# argv after ``--``: request fd, report fd, the four syscall numbers, n, n cgroup.procs paths.
# The request: its body's length in decimal and a NUL, then the body, NUL-separated: mode (user |
# keep), uid, gid, groups (comma separated), working directory, m, m candidate paths, k, k argv
# entries, then the environment's entries. The stub acts once it has the whole body (no wait for
# the writer to close the pipe). An empty request (a parked stub that was never used) ends the stub
# quietly; one cut short (its worker died while writing it) ends it without starting anything.
STUB_SUB = r"""
my $rep;
sub fail { my $e = ($! + 0) || 1; syswrite($rep, "$e $_[0]"); exit 127 }
sub stub {
my ($reqfd, $repfd, $nsg, $nsrg, $nsru, $nexec, $nj, @join) = @_;
open($rep, ">&=", $repfd) or exit 126;
fcntl($rep, 2, 1) or exit 126;
for my $f (splice @join, 0, $nj) {
  open(my $h, ">", $f) or fail("join-cgroup"); syswrite($h, "0") or fail("join-cgroup");
  close($h) or fail("join-cgroup");
}
open(my $in, "<&=", $reqfd) or fail("read-request");
my $blob = ""; my ($got, $want, $at);
while (1) {
  if (!defined $want && ($at = index($blob, "\0")) >= 0) {
    $! = 22; substr($blob, 0, $at) =~ /^[0-9]{1,12}\z/ or fail("read-request");
    $want = $at + 1 + substr($blob, 0, $at);
  }
  last if defined $want && length($blob) >= $want;
  $got = sysread($in, $blob, 65536, length $blob);
  defined $got or fail("read-request");
  last if !$got;
}
close($in);
exit 0 if $blob eq "";
$! = 22; defined $want && length($blob) == $want or fail("read-request");
my ($mode, $uid, $gid, $groups, $cwd, $nc, @rest) = split /\0/, substr($blob, $at + 1), -1;
my @cand = splice @rest, 0, $nc; my $na = shift @rest; my @argv = splice @rest, 0, $na;
if ($mode eq "user") {
  my @g = map { 0 + $_ } split /,/, $groups;
  $! = 1; $uid > 0 or fail("switch-user");
  syscall(0 + $nsg, scalar(@g), @g ? pack("L*", @g) : 0) == 0 or fail("setgroups");
  syscall(0 + $nsrg, 0 + $gid, 0 + $gid, 0 + $gid) == 0 or fail("setresgid");
  syscall(0 + $nsru, 0 + $uid, 0 + $uid, 0 + $uid) == 0 or fail("setresuid");
  open(my $st, "<", "/proc/self/status") or fail("verify-user");
  my %s; for (<$st>) { $s{$1} = $2 if /^(\w+):\s*(.*?)\s*$/ } close($st);
  my $want = join(",", sort { $a <=> $b } @g);
  $! = 1;
  join(" ", split(" ", $s{Uid} // "")) eq "$uid $uid $uid $uid" or fail("verify-user");
  join(" ", split(" ", $s{Gid} // "")) eq "$gid $gid $gid $gid" or fail("verify-user");
  join(",", sort { $a <=> $b } split(" ", $s{Groups} // "x")) eq $want or fail("verify-user");
  for my $c (qw(CapPrm CapEff CapAmb)) { ($s{$c} // "0") =~ /^0+$/ or fail("verify-user") }
} elsif ($mode ne "keep") { $! = 22; fail("read-request") }
chdir($cwd) or fail("chdir");
my $argvp = pack("p*", @argv, undef); my $envp = pack("p*", @rest, undef);
my $saved = 0; my $last = 2;
for my $p (@cand) {
  syscall(0 + $nexec, $p, $argvp, $envp);
  $last = $! + 0; $saved ||= $last if $last != 2 && $last != 20;
}
$! = $saved || $last; fail("exec");
}
"""
_LAUNCH_STUB = STUB_SUB + "stub(@ARGV);\n"
_STAGES = {  # what the stub was doing when it failed, as start errors say it
    "join-cgroup": "cannot join the task's cgroup",
    "read-request": "cannot read the command to start",
    "switch-user": "refusing to start a command as root",
    "setgroups": "cannot set the task user's groups",
    "setresgid": "cannot switch to the task user's group",
    "setresuid": "cannot switch to the task user",
    "verify-user": "privileges were not fully dropped",
    "chdir": "cannot enter the working directory",
}
REPORT_LIMIT = 4096
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
REQUEST_PIPE_SIZE = 1 << 20  # a parked stub's request pipe: any usual request fits without blocking


@functools.cache
def launch_available() -> bool:
    """Whether the stub works here (perl present, system call numbers known); asked once.
    The numbers are the 64-bit tables: a 32-bit userland on a 64-bit kernel (same ``uname``) has
    others, so a 32-bit Python is taken as its sign and forks instead."""
    return (
        os.access(PERL, os.X_OK)
        and os.uname().machine in _SYSCALLS
        and sys.maxsize > 2**32
        and hasattr(os, "memfd_create")
    )


def exec_candidates(name: str, env: Mapping[str, str]) -> list[str]:
    """The paths ``subprocess`` would try to ``execve`` for ``name``, in order (a bare name
    through the environment's ``PATH``, ``os.defpath`` without one: ``os.get_exec_path``'s rule,
    computed here without its per-call warnings filter); a relative one is made explicit
    (``./``) so it is taken relative to the working directory, never searched again."""
    if "/" in name:  # os.path.dirname(name) is not empty
        paths = [name]
    else:
        search = env.get("PATH")
        if search is None or not isinstance(search, str):
            search = os.pathsep.join(os.get_exec_path(dict(env)))  # bytes keys: the library's rule
        # os.path.join(d, name), which costs ~0.5 µs per directory of a long PATH
        paths = [(d if d.endswith("/") else d + "/") + name if d else name for d in search.split(os.pathsep)]
    return [p if "/" in p else "./" + p for p in paths]


def encode_environment(env: Mapping[str, str]) -> bytes:
    """``KEY=value`` entries, NUL-separated; refuses what ``subprocess`` refuses. Encoded as one
    string (the filesystem encoding, as ``os.fsencode``): a worker's environment has dozens of
    entries and this runs on the path of every command."""
    keys, values = list(env.keys()), list(env.values())
    try:  # str.join refuses anything but str: bytes (or odd) entries take the slow way
        names, contents = "\0".join(keys), "\0".join(values)
    except TypeError:
        return _encode_environment_items(env)
    if "=" in names:
        raise ValueError("illegal environment variable name")
    separators = max(len(keys) - 1, 0)
    if names.count("\0") != separators or contents.count("\0") != separators:
        raise ValueError("embedded null byte")
    return "\0".join(map("=".join, zip(keys, values, strict=True))).encode(_FS_ENCODING, _FS_ERRORS)


def _encode_environment_items(env: Mapping[str, str]) -> bytes:
    entries: list[bytes] = []
    for key, value in env.items():
        k, v = os.fsencode(key), os.fsencode(value)
        if b"=" in k:
            raise ValueError("illegal environment variable name")
        if b"\0" in k or b"\0" in v:
            raise ValueError("embedded null byte")
        entries.append(k + b"=" + v)
    return b"\0".join(entries)


@dataclass(frozen=True)
class TaskUser:
    """Who the stub drops to (``user`` mode); without one it keeps the worker's user."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def encode_request(argv: Sequence[str], env: Mapping[str, str], cwd: str, user: TaskUser | None) -> bytes:
    """The stub's request (format beside ``_LAUNCH_STUB``). Raises ``IndexError`` for an empty
    command and ``ValueError`` for what ``execve`` cannot take and for uid 0."""
    if not argv:
        raise IndexError("empty command")
    if user is not None and user.uid == 0:
        raise ValueError("the user-switching stub never starts a command as root")
    candidates = exec_candidates(argv[0], env)
    head = [
        "user" if user is not None else "keep",
        str(user.uid if user else -1),
        str(user.gid if user else -1),
        ",".join(str(g) for g in user.groups) if user else "",
        cwd,
        str(len(candidates)), *candidates,
        str(len(argv)), *argv,
    ]  # fmt: skip
    try:  # one string, encoded once (as ``os.fsencode``): this runs on every command's path
        text = "\0".join(head)
    except TypeError:  # bytes (or odd) entries in argv: one at a time
        fields = [os.fsencode(f) for f in head]
        if any(b"\0" in f for f in fields):
            raise ValueError("embedded null byte") from None
        body = b"\0".join(fields)
    else:
        if text.count("\0") != len(head) - 1:
            raise ValueError("embedded null byte")
        body = text.encode(_FS_ENCODING, _FS_ERRORS)
    if env:
        body += b"\0" + encode_environment(env)
    return b"%d\0" % len(body) + body


def syscall_numbers() -> tuple[int, int, int, int]:
    """(setgroups, setresgid, setresuid, execve) on this machine, as the stub takes them."""
    return _SYSCALLS[os.uname().machine]


def _stub_argv(request_fd: int, report_fd: int, join: Sequence[Path]) -> list[str]:
    setgroups, setresgid, setresuid, execve = syscall_numbers()
    return [
        PERL, "-e", _LAUNCH_STUB, "--",
        str(request_fd), str(report_fd),
        str(setgroups), str(setresgid), str(setresuid), str(execve),
        str(len(join)), *map(str, join),
    ]  # fmt: skip


class ChildHandle(Protocol):
    """What a stub's process must offer: ``subprocess.Popen``'s, or ``stubforker.ChildProcess``
    for one made by the forker."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


@dataclass
class StubLaunch:
    """One command started through the stub (see the module docstring).

    ``start`` spawns the stub with its request already in a sealed ``memfd``; ``park`` spawns it
    with stdout and stderr on a fresh pipe (``output``, ours to read) and the request still to
    ``send``. ``start_error`` — asked once the process has ended — says whether it ever became
    the command.
    """

    popen: ChildHandle
    _report: int  # our end of the report pipe
    _request: int = -1  # parked: our end of the request pipe, until ``send``
    output: int = -1  # parked: our end of the output pipe (the caller takes it over)
    _request_room: int = 0  # parked: the request pipe's capacity (a request that fits never waits)

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        user: TaskUser | None,
        join: Sequence[Path],
        **popen_kwargs: object,
    ) -> StubLaunch:
        """Spawn the stub for ``argv`` now. Raises what ``encode_request`` raises and what
        ``Popen`` raises for the stub itself."""
        request = encode_request(argv, env, cwd, user)
        request_fd = os.memfd_create("tcworker-request", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        report_r = report_w = -1
        try:
            write_all(request_fd, request)
            os.lseek(request_fd, 0, os.SEEK_SET)
            fcntl_seal(request_fd)
            report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            popen = subprocess.Popen(  # the command comes from the task payload by design
                _stub_argv(request_fd, report_w, join),
                env={}, cwd="/", pass_fds=(request_fd, report_w), **popen_kwargs,  # type: ignore[arg-type]
            )  # fmt: skip
        except BaseException:
            close_fds(report_r)
            raise
        finally:
            close_fds(request_fd, report_w)
        return cls(popen, report_r)

    @classmethod
    def park(cls, join: Sequence[Path], output_pipe_size: int) -> StubLaunch:
        """Spawn a stub that joins ``join`` now, in its own session with no stdin and stdout +
        stderr on a new pipe, and waits for ``send``. Raises ``OSError`` if it cannot start."""
        request_r, request_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        report_r = report_w = -1
        try:
            request_room = _size_pipes(request_w, out_r, output_pipe_size)
            report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            popen = subprocess.Popen(
                _stub_argv(request_r, report_w, join),
                env={},
                cwd="/",
                pass_fds=(request_r, report_w),
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            close_fds(request_w, out_r, report_r)
            raise
        finally:
            close_fds(request_r, out_w, report_w)
        return cls(popen, report_r, request_w, out_r, request_room)

    @classmethod
    def from_pipes(
        cls, process: ChildHandle, request_w: int, out_r: int, report_r: int, output_pipe_size: int
    ) -> StubLaunch:
        """A parked stub some other way made (``stubforker``), given our ends of its pipes
        (taken over: closed by ``drop``/``close`` as ``park``'s own)."""
        return cls(process, report_r, request_w, out_r, _size_pipes(request_w, out_r, output_pipe_size))

    def waiting(self) -> bool:
        """A parked stub still waiting for its request (not dead meanwhile)."""
        return self._request >= 0 and self.popen.poll() is None

    async def send(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: str, user: TaskUser | None
    ) -> None:
        """Hand a parked stub its command. Raises what ``encode_request`` raises (nothing sent:
        the stub is still parked) and ``OSError`` when the stub is gone. A caller cancelled here
        must ``abandon`` the stub: it may still be reading its request."""
        request = encode_request(argv, env, cwd, user)
        fd, self._request = self._request, -1
        if len(request) <= self._request_room:  # fits in the pipe: no wait for the reader
            try:
                write_all(fd, request)
            finally:
                os.close(fd)
        else:  # the thread closes the pipe itself: never under its own write, even if we are cancelled
            await asyncio.to_thread(_write_and_close, fd, request)

    async def abandon(self) -> None:
        """End a stub whose request may have been (partly) sent, before it starts the command
        (a cancelled run), and reap it."""
        with contextlib.suppress(OSError):
            self.popen.kill()
        await self.discard()

    async def discard(self) -> None:
        """End a parked stub that will not be used (an empty request ends it) and reap it."""
        self.drop()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.popen.wait), 5)
        except TimeoutError:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait)

    def start_error(self) -> OSError | None:
        """After the process has ended: why the command never started, or ``None`` when it
        did (the report pipe closed empty at its ``execve``). Closes the pipe."""
        if self._report < 0:
            return None
        try:
            report = os.read(self._report, REPORT_LIMIT)
        except BlockingIOError:  # still open: the stub is somehow alive; it never got to exec
            report = b""
        finally:
            self.close()
        if not report:
            return None
        code_text, _, stage = report.decode("ascii", "replace").partition(" ")
        try:
            code = int(code_text)
        except ValueError:
            code = errno.EPERM
        if stage == "exec":
            return OSError(code, os.strerror(code))  # FileNotFoundError, PermissionError, ...
        what = _STAGES.get(stage, stage)
        return OSError(code, f"{what}: {os.strerror(code)}")

    def close(self) -> None:
        """Drop the report pipe (``start_error`` does it too)."""
        close_fds(self._report)
        self._report = -1

    def drop(self) -> None:
        """Close every pipe we still hold of a parked stub that will never be used (it ended on
        its own; ``discard`` ends a living one)."""
        close_fds(self._request, self.output)
        self._request = self.output = -1
        self.close()


async def run_as_user(
    argv: Sequence[str], uid: int, gid: int, groups: Sequence[int], **kwargs: object
) -> tuple[int, bytes]:
    """Run a short helper command (``argv`` with a fixed ``PATH`` in ``/``) as the user through the
    stub, without forking the worker; ``(exit status, stderr)``. Raises the start error."""
    user = TaskUser(uid, gid, tuple(groups))
    launch = StubLaunch.start(
        argv, {"PATH": "/usr/bin:/bin"}, "/", user, (),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs,
    )  # fmt: skip
    try:
        assert launch.popen.stderr is not None
        err = await asyncio.to_thread(launch.popen.stderr.read)
        await asyncio.to_thread(launch.popen.wait)
    finally:
        error = launch.start_error()
        if launch.popen.stderr is not None:
            launch.popen.stderr.close()
    if error is not None:
        raise error
    return launch.popen.returncode or 0, err


def _size_pipes(request_w: int, out_r: int, output_pipe_size: int) -> int:
    """A parked stub's request and output pipes to their sizes (best effort); returns the
    request pipe's capacity, what the kernel granted."""
    for fd, size in ((request_w, REQUEST_PIPE_SIZE), (out_r, output_pipe_size)):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    return fcntl.fcntl(request_w, fcntl.F_GETPIPE_SZ)


def fcntl_seal(fd: int) -> None:
    """Seal the environment's memfd: nobody can change it between our write and the stub's read."""
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def _write_and_close(fd: int, data: bytes) -> None:
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def close_fds(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
