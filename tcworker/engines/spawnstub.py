"""Start a task command with ``vfork`` even when it must join the task's cgroup first.

CPython's ``subprocess`` uses ``vfork`` only when the child needs no Python code and keeps the
parent's uid: a ``preexec_fn`` (joining the task's cgroup before ``exec``) makes it ``fork`` the
whole worker instead. On this kind of
machine that costs 10–35 ms per command for a ~80 MB worker (the child and the parent fault in
copy-on-write pages until the child execs), against ~0.4 ms for ``vfork`` — more than everything
else a trivial task costs the worker.

So the joining is done by a small program the child ``exec``s instead: a one-line ``perl`` (Debian's
Essential ``perl-base``; ``/bin/sh`` would add ``PWD`` to the task's environment) writes ``0`` to
each ``cgroup.procs`` of the task (moving itself, before the command exists) and ``execvp``s the
command with the task's ``PATH`` — the same search ``subprocess`` does. Nothing of the task runs
before it is in its cgroup, as with ``preexec_fn``. That stub runs with the task's environment, so
it is used only where the task runs as the worker's own user (the simple engine). What
``subprocess`` reported as a start error (command not found, not executable, not a program) would
now be the stub's exit status, so ``check_executable`` makes the same checks first and raises the
same exceptions.

Under another uid (the multiuser engine) ``subprocess`` forks for ``user=`` alone, and the stub
above would hand the task root (a task's ``LD_PRELOAD``/``PERL5OPT`` would load into a root
process). ``UserLaunch`` is the stub for that case, chosen over a spawner process (its children
would not be the worker's, so no ``wait4`` rusage, no pidfd of our own child) and
``clone3(CLONE_INTO_CGROUP)`` (needs code between clone and exec, which Python cannot run safely)
because it keeps every other property of the runner and is one small, auditable program:

- it is ``/usr/bin/perl -e`` started by ``vfork`` with an **empty environment** (nothing of the
  task — no ``LD_*``, no ``PERL*`` — reaches the root process) and loads no module;
- the task's environment travels in a sealed ``memfd`` whose descriptor it inherits — never argv,
  never a file on disk — read and closed before anything else of the task happens;
- as root it joins the task's cgroup(s), then drops **all** privilege with raw system calls:
  ``setgroups`` (exactly the task's groups, none of root's), ``setresgid`` and ``setresuid`` (real,
  effective and saved ids; Perl's ``$<``/``$)`` variables leave saved ids behind in some orders and
  cannot empty the group list), and verifies in ``/proc/self/status`` that every uid and gid is the
  task's, the groups are exactly the task's and no capability is left, else it refuses to go on;
- it calls ``execve`` (the raw system call: no ``execvp`` falling back to ``/bin/sh`` for a file without
  ``#!``) on each candidate path the worker computed from the task's ``PATH`` exactly as
  ``subprocess`` does, with exactly the task's environment, and reports the first telling
  ``errno`` (as ``subprocess`` does) on a close-on-exec pipe. An exec that succeeds closes the pipe
  empty; the worker reads it once the process has ended, so a start error is still a start error
  (``FileNotFoundError``, ``PermissionError``, ``ENOEXEC``) judged with the task user's rights, and
  a command that starts costs no extra wait.

The system call numbers are per machine (``_SYSCALLS``); elsewhere ``user_launch_available`` is
false and the caller forks as before. ``run_as_user`` starts the multiuser engine's short helper
commands (the chain-of-trust read check, a mount point's ``mkdir``) the same way.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import os
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PERL = "/usr/bin/perl"  # perl-base is Essential on Debian; /bin/sh would add PWD to the env
# Writes "0" (= this process) to each cgroup.procs given, then execvp()s the command: the
# environment passes through unchanged, argv[0] and the PATH search are the command's own.
_STUB = (
    "my $n = shift @ARGV; for my $f (splice @ARGV, 0, $n) {"
    ' open(my $h, ">", $f) or die "tcworker: cannot join the task cgroup ($f): $!\\n";'
    ' syswrite($h, "0") or die "tcworker: cannot join the task cgroup ($f): $!\\n"; close($h) }'
    " exec { $ARGV[0] } @ARGV; die \"tcworker: cannot execute $ARGV[0]: $!\\n\";"
)
_MAGIC = (b"#!", b"\x7fELF")


def available() -> bool:
    """Whether the stub can be used on this host (else the caller forks as before)."""
    return os.access(PERL, os.X_OK)


def stub_argv(argv: Sequence[str], join: Sequence[Path]) -> list[str]:
    """The argv to ``vfork``+``exec`` instead of ``argv``: join ``join`` (``cgroup.procs``
    files), then ``exec`` ``argv``."""
    return [PERL, "-e", _STUB, str(len(join)), *map(str, join), *argv]


def check_executable(name: str, env: Mapping[str, str], cwd: str) -> None:
    """Raise what ``subprocess`` would have raised for ``name`` (``FileNotFoundError``,
    ``PermissionError``, ``OSError(ENOEXEC)``); return when it looks runnable."""
    if "/" in name:
        candidates = [os.path.join(cwd, name)]
    else:
        candidates = [os.path.join(cwd, d, name) for d in os.get_exec_path(dict(env))]
    saved: OSError | None = None
    for path in candidates:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            saved = saved or e
            continue
        if stat.S_ISDIR(st.st_mode) or not os.access(path, os.X_OK):
            saved = saved or PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            return  # executable but unreadable: let exec decide
        if not head.startswith(_MAGIC):
            raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), name)
        return
    if saved is not None:
        raise saved
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


# ---- multiuser: start as root with an empty environment, join, drop every privilege, execve ----

# (setgroups, setresgid, setresuid, execve) with 32-bit ids, per ``os.uname().machine``.
_SYSCALLS: dict[str, tuple[int, int, int, int]] = {
    "x86_64": (116, 119, 117, 59),
    "aarch64": (159, 149, 147, 221),  # the generic table (asm-generic/unistd.h)
    "riscv64": (159, 149, 147, 221),
}
# argv after ``--``: env fd, report fd, the four syscall numbers, uid, gid, groups (comma
# separated), n, n cgroup.procs paths, m, m candidate paths, then the command's argv.
_USER_STUB = r"""
my ($envfd, $repfd, $nsg, $nsrg, $nsru, $nexec, $uid, $gid, $groups, $nj) = splice @ARGV, 0, 10;
open(my $rep, ">&=", $repfd) or exit 126;
fcntl($rep, 2, 1) or exit 126;
sub fail { my $e = ($! + 0) || 1; syswrite($rep, "$e $_[0]"); exit 127 }
for my $f (splice @ARGV, 0, $nj) {
  open(my $h, ">", $f) or fail("join-cgroup"); syswrite($h, "0") or fail("join-cgroup");
  close($h) or fail("join-cgroup");
}
open(my $in, "<&=", $envfd) or fail("read-environment");
my $blob = ""; 1 while sysread($in, $blob, 65536, length $blob); close($in);
my @env = split /\0/, $blob;
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
my $nc = shift @ARGV; my @cand = splice @ARGV, 0, $nc;
my $argvp = pack("p*", @ARGV, undef); my $envp = pack("p*", @env, undef);
my $saved = 0; my $last = 2;
for my $p (@cand) {
  syscall(0 + $nexec, $p, $argvp, $envp);
  $last = $! + 0; $saved ||= $last if $last != 2 && $last != 20;
}
$! = $saved || $last; fail("exec");
"""
_STAGES = {  # what the stub was doing when it failed, as start errors say it
    "join-cgroup": "cannot join the task's cgroup",
    "read-environment": "cannot read the task's environment",
    "switch-user": "refusing to start a command as root",
    "setgroups": "cannot set the task user's groups",
    "setresgid": "cannot switch to the task user's group",
    "setresuid": "cannot switch to the task user",
    "verify-user": "privileges were not fully dropped",
}
REPORT_LIMIT = 4096


@functools.cache
def user_launch_available() -> bool:
    """Whether ``UserLaunch`` works here (perl present, system call numbers known); asked once.
    The numbers are the 64-bit tables: a 32-bit userland on a 64-bit kernel (same ``uname``) has
    others, so a 32-bit Python is taken as its sign and forks instead."""
    return (
        available()
        and os.uname().machine in _SYSCALLS
        and sys.maxsize > 2**32
        and hasattr(os, "memfd_create")
    )


def exec_candidates(name: str, env: Mapping[str, str]) -> list[str]:
    """The paths ``subprocess`` would try to ``execve`` for ``name``, in order (a bare name
    through the environment's ``PATH``, ``os.defpath`` without one); a relative one is made
    explicit (``./``) so it is taken relative to the working directory, never searched again."""
    if os.path.dirname(name):
        paths = [name]
    else:
        paths = [os.path.join(d, name) for d in os.get_exec_path(dict(env))]
    return [p if "/" in p else "./" + p for p in paths]


def encode_environment(env: Mapping[str, str]) -> bytes:
    """``KEY=value`` entries, NUL-separated; refuses what ``subprocess`` refuses."""
    entries: list[bytes] = []
    for key, value in env.items():
        k, v = os.fsencode(key), os.fsencode(value)
        if b"=" in k:
            raise ValueError("illegal environment variable name")
        if b"\0" in k or b"\0" in v:
            raise ValueError("embedded null byte")
        entries.append(k + b"=" + v)
    return b"\0".join(entries)


@dataclass
class UserLaunch:
    """One command started through the privilege-dropping stub (see the module docstring).

    ``prepare`` makes the stub's argv and the descriptors it inherits; the caller spawns
    ``argv`` with an empty environment, ``pass_fds`` and no ``user=``/``preexec_fn`` (so
    ``subprocess`` can ``vfork``), then calls ``spawned``. ``start`` does all of that with
    ``subprocess.Popen``; ``start_error`` — asked once the process has ended — says whether it
    ever became the command.
    """

    argv: list[str]
    pass_fds: tuple[int, int]
    _report: int
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def prepare(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        uid: int,
        gid: int,
        groups: Sequence[int],
        join: Sequence[Path],
    ) -> UserLaunch:
        """The stub that runs ``argv`` as ``uid``/``gid``/``groups`` with exactly ``env``, in the
        cgroups whose ``cgroup.procs`` are ``join``. Raises ``ValueError`` for an environment
        ``execve`` cannot take and for uid 0."""
        if uid == 0:
            raise ValueError("the user-switching stub never starts a command as root")
        if not argv:
            raise IndexError("empty command")
        setgroups, setresgid, setresuid, execve = _SYSCALLS[os.uname().machine]
        blob = encode_environment(env)
        candidates = exec_candidates(argv[0], env)
        env_fd = os.memfd_create("tcworker-task-env", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            _write_all(env_fd, blob)
            os.lseek(env_fd, 0, os.SEEK_SET)
            fcntl_seal(env_fd)
            report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except BaseException:
            os.close(env_fd)
            raise
        stub = [
            PERL, "-e", _USER_STUB, "--",
            str(env_fd), str(report_w),
            str(setgroups), str(setresgid), str(setresuid), str(execve),
            str(uid), str(gid), ",".join(str(g) for g in groups),
            str(len(join)), *map(str, join),
            str(len(candidates)), *candidates,
            *argv,
        ]  # fmt: skip
        return cls(stub, (env_fd, report_w), report_r)

    def spawned(self) -> None:
        """Close the parent's copies of what the stub inherits (after the spawn, or its failure)."""
        for fd in self.pass_fds:
            if fd >= 0:
                os.close(fd)
        self.pass_fds = (-1, -1)

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        uid: int,
        gid: int,
        groups: Sequence[int],
        join: Sequence[Path],
        **popen_kwargs: object,
    ) -> UserLaunch:
        """``prepare`` + ``subprocess.Popen`` in ``cwd``. Raises what ``Popen`` raises for the stub
        itself (``cwd`` missing, ...) and what ``prepare`` raises."""
        launch = cls.prepare(argv, env, uid, gid, groups, join)
        try:
            launch.popen = subprocess.Popen(  # argv comes from the task payload by design
                launch.argv, env={}, cwd=cwd, pass_fds=launch.pass_fds, **popen_kwargs  # type: ignore[arg-type]
            )
        except BaseException:
            launch.close()
            raise
        finally:
            launch.spawned()
        return launch

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
        if self._report >= 0:
            os.close(self._report)
            self._report = -1


async def run_as_user(
    argv: Sequence[str], uid: int, gid: int, groups: Sequence[int], **kwargs: object
) -> tuple[int, bytes]:
    """Run a short helper command (``argv`` with a fixed ``PATH`` in ``/``) as the user through the
    stub, without forking the worker; ``(exit status, stderr)``. Raises the start error."""
    launch = UserLaunch.prepare(argv, {"PATH": "/usr/bin:/bin"}, uid, gid, groups, ())
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            env={},
            cwd="/",
            pass_fds=launch.pass_fds,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            **kwargs,  # type: ignore[arg-type]
        )
    except BaseException:
        launch.close()
        raise
    finally:
        launch.spawned()
    try:
        _, err = await proc.communicate()
    finally:
        error = launch.start_error()
    if error is not None:
        raise error
    return proc.returncode or 0, err


def fcntl_seal(fd: int) -> None:
    """Seal the environment's memfd: nobody can change it between our write and the stub's read."""
    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
