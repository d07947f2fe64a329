"""The project's rule for missing infrastructure, in one place: skip locally, fail in CI.

A test that needs root, a Docker daemon or a host tool must not pass silently on a CI machine that
lacks it: under ``CI=true`` every such skip becomes a failure naming what is missing. Everything
that skips for a missing prerequisite goes through ``skip_or_fail`` (directly or through
``require_root`` / ``require_tool``) so the rule cannot be forgotten in one corner of the suite.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

import pytest

_PR_SET_PDEATHSIG = 1


def in_ci() -> bool:
    """True when env CI is set to a true value: missing infrastructure must then fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip locally, fail in CI (the project's rule for missing infrastructure)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def require_root(what: str) -> None:
    """``what`` (e.g. "the multiuser engine") needs root: skip_or_fail when we are not root."""
    if os.geteuid() != 0:
        skip_or_fail(f"{what} needs root (CI runs the suite as root)")


def require_linux(what: str) -> None:
    if not sys.platform.startswith("linux"):
        skip_or_fail(f"{what} is Linux only")


def require_tool(command: str, package: str) -> str:
    """The path of ``command``; skip_or_fail naming the Debian ``package`` when it is missing."""
    path = shutil.which(command)
    if path is None:
        skip_or_fail(f"{command} is not installed (apt-get install {package})")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (prefer binding port 0 where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """``preexec_fn``: the kernel SIGKILLs the child if the test process dies, so nothing is left behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def child_preexec() -> Callable[[], None] | None:
    """``die_with_parent`` when spawning from the main thread: PDEATHSIG is tied to the spawning
    *thread*, so from any other thread the child would die with that thread instead."""
    return die_with_parent if threading.current_thread() is threading.main_thread() else None


def require_multiuser_host(what: str = "the multiuser engine") -> None:
    """The multiuser engine creates OS users: Linux, root and ``useradd`` (passwd package)."""
    require_linux(what)
    require_root(what)
    require_tool("useradd", "passwd")
