"""OS accounts for the multiuser engine: create a task user, and remove it without a trace.

generic-worker (headless multiuser, spec §2.8) makes one user per run, named like the task
directory (``task_<taskIdPrefix>_<runId>``) with that directory as its home. Removal here kills
every process of the uid first (``proctree.kill_user_processes``: daemons, ``setsid``, changed
process groups — all of them), then deletes what the user may have left in the world-writable
places (``/tmp``, ``/var/tmp``, ``/dev/shm``, System V IPC objects), then the account itself.
Files go *before* the account so that a uid recycled by the next ``useradd`` never inherits
anything.

``useradd``/``userdel`` take a lock on ``/etc/passwd``; calls are serialised per engine and
retried when another process (another worker on the host) holds the lock. Creations go first: a
``userdel`` waits while any ``useradd`` is wanted, because a new user may be what a claimed task
is waiting for, while removing a finished task's user (its processes already dead) can wait until
a burst of tasks is over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import secrets
import shutil
import stat
import string
from dataclasses import dataclass
from pathlib import Path

from tcworker.engines.proctree import kill_user_processes

log = logging.getLogger(__name__)

SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
LOCK_RETRIES = 20
USERADD = "useradd"
# useradd makes the home 0777 & ~UMASK (login.defs; 022 on Debian: 0755) unless login.defs sets
# HOME_MODE: with UMASK 077 it is 0700 from its mkdir on, not only after our chmod — the pool
# makes homes while other tasks run, and one could list a fresh home in between. (``-K
# HOME_MODE=0700`` would be unknown to shadow < 4.9, which then refuses to run.)
HOME_UMASK = "UMASK=0077"
USERDEL = "userdel"


class AccountError(Exception):
    """``useradd``/``userdel``/``chpasswd`` failed."""


@dataclass(frozen=True)
class TaskUser:
    name: str
    uid: int
    gid: int
    home: Path


async def _run(argv: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
    )
    out, _ = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def _run_with_lock_retry(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> tuple[int, str]:
    """Run an account tool, retrying while another process holds the passwd/group lock."""
    code, out = 0, ""
    for attempt in range(LOCK_RETRIES):
        code, out = await _run(argv)
        if code in ok_codes or "lock" not in out.lower():
            return code, out
        await asyncio.sleep(0.05 * (attempt + 1))
    return code, out


def lookup(name: str) -> TaskUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


class Accounts:
    """Creates and removes task users; one per engine (holds the engine's serialising lock)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._creating = 0  # creations waiting for or holding the lock
        self._no_creation = asyncio.Event()
        self._no_creation.set()

    async def create(self, name: str, home: Path) -> TaskUser:
        """``useradd -m -d <home>``: a user and group named ``name``, home ``home`` (0700 from
        the start: ``HOME_UMASK``)."""
        self._creating += 1
        self._no_creation.clear()
        try:
            async with self._lock:
                code, out = await _run_with_lock_retry(
                    [USERADD, "--badname", "-m", "-d", str(home), "-K", HOME_UMASK,
                     "-s", "/bin/bash", "-c", name, "-U", name]
                )  # fmt: skip
        finally:
            self._creating -= 1
            if self._creating == 0:
                self._no_creation.set()
        if code != 0:
            raise AccountError(f"useradd {name} failed (exit {code}): {out}")
        user = lookup(name)
        if user is None:
            raise AccountError(f"useradd {name} succeeded but the user does not exist")
        os.chown(home, user.uid, user.gid)
        os.chmod(home, 0o700)
        return user

    async def _userdel(self, name: str) -> tuple[int, str]:
        """``userdel --force``, after every wanted creation (module docstring): a removal that
        gets the lock while a creation waits for it lets the creation go first."""
        while True:
            await self._no_creation.wait()
            async with self._lock:
                if self._creating:
                    continue
                return await _run_with_lock_retry([USERDEL, "--force", name], ok_codes=(0, 6))

    async def set_random_password(self, user: TaskUser) -> str:
        """Give the user generic-worker's kind of password (``pWd0_`` + 24 alphanumerics)."""
        alphabet = string.ascii_letters + string.digits
        password = "pWd0_" + "".join(secrets.choice(alphabet) for _ in range(24))
        async with self._lock:
            proc = await asyncio.create_subprocess_exec(
                "chpasswd",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            )
            out, _ = await proc.communicate(f"{user.name}:{password}\n".encode())
        if proc.returncode != 0:
            raise AccountError(f"chpasswd for {user.name} failed: {out.decode(errors='replace').strip()}")
        return password

    async def remove(self, user: TaskUser, home_action: str) -> list[str]:
        """Kill, clean and delete ``user``; ``home_action`` is ``"delete"``, ``"keep"`` (chowned to
        root so a recycled uid cannot read it) or ``"ignore"``. Returns problems (never raises)."""
        problems: list[str] = []
        if user.uid == 0 or user.uid == os.getuid():
            return [f"refusing to remove user {user.name} with uid {user.uid}"]
        survivors = await kill_user_processes(user.uid, user.gid)
        if survivors:
            problems.append(f"processes of {user.name} survived SIGKILL: {survivors}")
        problems += await asyncio.to_thread(remove_user_files, user.uid)
        problems += await remove_ipc_objects(user.uid)
        if home_action == "delete":
            await asyncio.to_thread(shutil.rmtree, user.home, ignore_errors=True)
            if user.home.exists():
                problems.append(f"could not remove home directory {user.home}")
        elif home_action == "keep" and user.home.exists():
            await asyncio.to_thread(chown_tree, user.home, user.uid)
        code, out = await self._userdel(user.name)
        if code not in (0, 6):  # 6: no such user
            problems.append(f"userdel {user.name} failed (exit {code}): {out}")
        for problem in problems:
            log.warning("removing task user: %s", problem)
        return problems


def chown_tree(top: Path, uid: int) -> None:
    """Give every entry of ``top`` owned by ``uid`` to root, without following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            try:
                if os.lstat(path).st_uid == uid:
                    os.lchown(path, 0, 0)
            except OSError:
                continue


def remove_user_files(uid: int, roots: tuple[str, ...] = SHARED_DIRS) -> list[str]:
    """Delete everything ``uid`` owns below the shared writable directories.

    Only world-writable directories are searched (a task user can create files nowhere else
    there), so big private trees such as pytest's are not walked; a directory owned by ``uid``
    goes as a whole.
    """
    problems: list[str] = []
    pending = [r for r in roots if os.path.isdir(r)]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if st.st_uid == uid:
                try:
                    if is_dir:
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                except OSError as e:
                    problems.append(f"cannot remove {entry.path}: {e.strerror}")
            elif is_dir and st.st_mode & stat.S_IWOTH:
                pending.append(entry.path)
    return problems


async def remove_ipc_objects(uid: int) -> list[str]:
    """Remove System V shared memory, semaphores and message queues owned by ``uid``."""
    problems: list[str] = []
    for flag, ident in ipc_objects_of(uid):
        code, out = await _run(["ipcrm", flag, ident])
        if code != 0:
            problems.append(f"ipcrm {flag} {ident}: {out}")
    return problems


def ipc_objects_of(uid: int) -> list[tuple[str, str]]:
    """``(ipcrm flag, id)`` of the System V IPC objects owned by ``uid`` (from /proc/sysvipc)."""
    found: list[tuple[str, str]] = []
    # file, ipcrm flag, index of the uid column
    for kind, flag, uid_index in (("shm", "-m", 7), ("sem", "-s", 4), ("msg", "-q", 7)):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            try:
                if int(fields[uid_index]) == uid:
                    found.append((flag, fields[1]))
            except (IndexError, ValueError):
                continue
    return found
