"""Find every OS process a task left behind, however it detached.

Each task gets a unique `E2E_MARK` variable in its payload env (`Submitter` adds it) and every
descendant inherits it, even across `setsid` or a double fork, so a scan of `/proc/*/environ`
finds them all: the tests assert on it, and teardown kills what is left (`kill_marked`).
"""

from __future__ import annotations

import contextlib
import os
import time

import psutil

MARK_VAR = "E2E_MARK"


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries E2E_MARK=<mark>."""
    needle = f"{MARK_VAR}={mark}".encode()
    found: list[psutil.Process] = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"pid={p.pid} ppid={p.ppid()} sid={os.getsid(p.pid)} cmd={p.cmdline()}")
    return "\n".join(lines)


def wait_for_marked(mark: str, *, present: bool, timeout: float) -> list[psutil.Process]:
    """Wait until marked processes exist (present=True) or are all gone (present=False)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = marked_processes(mark)
        if bool(procs) == present or time.monotonic() >= deadline:
            return procs
        time.sleep(0.05)


def kill_marked(mark: str) -> None:
    """Teardown safety net: SIGKILL whatever a task left (the assertions have already run)."""
    for p in marked_processes(mark):
        with contextlib.suppress(psutil.Error):
            p.kill()


def processes_with_arg(arg: str) -> list[psutil.Process]:
    """Living (non-zombie) processes whose argv holds ``arg`` (found even after they left the
    task's tree, session and environment)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if arg in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found
