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
before it is in its cgroup, as with ``preexec_fn``. The stub runs with the task's
environment, so it is used only where the task runs as the worker's own user (the simple engine):
as root with a task's ``LD_PRELOAD`` it would hand the task root on multiuser, which therefore
keeps the ``preexec_fn`` (and the fork ``user=`` implies anyway; ``setpriv`` in the stub would
have the same problem).

What ``subprocess`` reported as a start error (command not found, not executable, not a program)
would now be the stub's exit status, so ``check_executable`` makes the same checks first and
raises the same exceptions.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
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
