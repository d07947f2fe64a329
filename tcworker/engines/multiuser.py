"""The multiuser engine: each run as its own unprivileged OS user (generic-worker headless multiuser).

Per run (spec §2.8): a fresh user whose home is the task directory (0700, so concurrent tasks
cannot read each other's), taken from a pool of users made ahead in the background
(``userpool``: ``task_`` + random characters, never used twice); commands run with its uid, gid and
only the supplementary groups granted through ``osGroups``, in a new session, with exactly the
environment ``TaskRun`` builds from ``base_env`` (nothing of the worker's own environment).
After every command all processes of the uid are killed (in the background: the next command,
artifact copy or other process of the task user waits for it, the task's report does not);
``destroy`` kills them again, removes
the user's files in the shared temporary directories and its IPC objects, the task directory
(or hands it to root when ``cleanUpTaskDirs`` is false) and finally the account.

Artifacts are read by a helper running *as the task user* (``artifact_copy``), so nothing the
task user cannot read itself — ``/etc/shadow``, the worker's config or signing key — can be
published through a symlink. The worker refuses to start (exit 82) when its ed25519 signing key
is missing or readable by anyone but the worker user. Stale task users of a crashed worker
(``task_*`` users whose home lies in ``tasksDir``) are removed at start-up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import grp
import json
import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tcworker.engines import runas, spawnstub
from tcworker.engines.artifact_copy import copy_artifact, helper_interpreter
from tcworker.engines.base import ArtifactFile, RunContext
from tcworker.engines.cgroups import TaskCgroup
from tcworker.engines.hostsandbox import HostEngine, HostSandbox, ReleaseLane
from tcworker.engines.process import Identity
from tcworker.engines.proctree import boot_ticks_now, kill_user_processes
from tcworker.engines.taskusers import AccountError, Accounts, TaskUser
from tcworker.engines.userpool import TaskUserPool
from tcworker.errors import ConfigError, HostBroken, InternalError, MalformedPayload
from tcworker.exitcodes import ExitCode
from tcworker.mounts.ownership import chown_tree
from tcworker.taskdirs import create_tasks_dir

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig

log = logging.getLogger(__name__)

TASK_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def check_signing_key(location: str) -> None:
    """Refuse to start when the signing key is missing, undecodable or readable by others (82)."""
    code = ExitCode.MISSING_ED25519_PRIVATE_KEY
    if not location:
        raise ConfigError("config key 'ed25519SigningKeyLocation' is empty", code)
    try:
        st = os.stat(location)
        with open(location, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the ed25519 signing key {location!r}: {e.strerror}", code) from e
    try:
        seed = base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ConfigError(f"the ed25519 signing key {location!r} is not a base64 32-byte seed", code)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"the ed25519 signing key {location!r} is readable by other users "
            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); task users could steal it. "
            f"Run: chown {os.geteuid()} {location} && chmod 600 {location}",
            code,
        )


def secure_config_file(path: str) -> None:
    """The config holds the worker's access token: owned by the worker, mode 0600 (GW; else 77)."""
    if not path:
        return  # built in memory (tcworker local, tests): no file to protect
    try:
        os.chown(path, os.geteuid(), os.getegid())
        os.chmod(path, 0o600)
    except OSError as e:
        raise ConfigError(
            f"cannot secure the config file {path!r} (chown/chmod 600): {e.strerror}",
            ExitCode.CANT_SECURE_CONFIG,
        ) from e


def check_traversable(directory: Path) -> None:
    """Task users must be able to reach their home below ``tasksDir``."""
    for p in [directory, *directory.parents]:
        if not p.stat().st_mode & stat.S_IXOTH:
            raise ConfigError(
                f"tasksDir {str(directory)!r} is not reachable by task users: {str(p)!r} is not "
                "searchable by others (needs o+x)"
            )


class MultiuserSandbox(HostSandbox):
    """One run as its own OS user."""

    def __init__(
        self,
        user: TaskUser,
        pool: TaskUserPool,
        interpreter: str,
        *,
        clean_up: bool,
        grace: float,
        cgroup: TaskCgroup | None = None,
        parked: spawnstub.StubLaunch | None = None,
        park: Callable[[Sequence[Path]], spawnstub.StubLaunch] | None = None,
        on_destroyed: Callable[[], None] | None = None,
        lane: ReleaseLane | None = None,
    ) -> None:
        super().__init__(
            user.home,
            clean_up=clean_up,
            grace=grace,
            cgroup=cgroup,
            parked=parked,
            park=park,
            on_destroyed=on_destroyed,
            lane=lane,
        )
        self.user = user
        self._pool = pool
        self._interpreter = interpreter
        self._groups: tuple[int, ...] = ()
        self._as_current_user = False
        self._born = boot_ticks_now() - 100  # a second's margin for clock-tick rounding

    def identity(self) -> Identity | None:
        if self._as_current_user:
            return None
        return Identity(self.user.uid, self.user.gid, self._groups)

    def task_uid(self) -> int | None:
        """The task user's uid (``None`` under runTaskAsCurrentUser: commands run as the worker)."""
        identity = self.identity()
        return identity.uid if identity is not None else None

    def marker(self, env: Mapping[str, str]) -> bytes | None:
        return super().marker(env) if self._as_current_user else None

    def _sweeper(self) -> Callable[[], Awaitable[object]] | None:
        return self._sweep

    async def _sweep(self) -> None:
        """Kill every process of the task user (those outside the task's cgroup and tree too)."""
        await kill_user_processes(self.user.uid, self.user.gid, since=self._born)

    def base_env(self) -> dict[str, str]:
        return {"HOME": str(self.task_dir), "PATH": TASK_PATH, "USER": self.user.name}

    async def destroy(self) -> None:
        """Kill, clean up and delete the task user (idempotent; never raises for clean-up problems).
        The user is never handed out again, whatever happened to the run."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            with contextlib.suppress(Exception):  # the removal below kills everything anyway
                await self.settle_processes()
            await self._release_host(remove_task_dir=False)  # the pool removes the home
        finally:
            await self._pool.retire(self.user, "delete" if self._clean_up else "keep")

    async def set_os_groups(self, groups: Sequence[str]) -> None:
        """Supplementary groups for the commands (scopes were checked by the feature's caller)."""
        gids: list[int] = []
        unknown: list[str] = []
        for name in groups:
            try:
                gids.append(grp.getgrnam(name).gr_gid)
            except KeyError:
                unknown.append(name)
        if unknown:
            raise MalformedPayload(
                "Could not add task user to os group(s): ["
                + " ".join(unknown)
                + "]: no such group on this worker"
            )
        self._groups = tuple(dict.fromkeys([*self._groups, *gids]))

    async def run_as_current_user(self) -> Path:
        """runTaskAsCurrentUser: commands run as the worker's user; returns the credentials file."""
        password = await self._pool.accounts.set_random_password(self.user)
        path = self.task_dir / "task-user-credentials.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"name": self.user.name, "password": password}, f)
        self._as_current_user = True
        return path

    async def task_user_can_read(self, path: str) -> bool:
        """Whether the commands' user can open ``path`` (chain of trust checks the signing key;
        under runTaskAsCurrentUser that user is the worker's, so the answer is yes)."""
        await self.settle_processes()
        code, _ = await _run_helper(["/bin/cat", "--", path], self.identity())
        return code == 0

    async def make_dirs(self, path: Path) -> None:
        """``mkdir -p`` run as the commands' user, then a write check: a place the task user could
        not create a mount in itself (a root-only directory) stays closed (``PermissionError``)."""
        await self.settle_processes()
        ident = self.identity()
        if ident is None:
            await super().make_dirs(path)
            return
        script = 'mkdir -p -- "$1" && test -w "$1" -a -x "$1" || { echo "cannot write in $1" >&2; exit 1; }'
        code, err = await _run_helper(["/bin/sh", "-c", script, "sh", str(path)], ident)
        if code != 0:
            raise PermissionError(err.decode("utf-8", "replace").strip() or f"mkdir -p {path} failed")

    def give_to_task(self, path: Path) -> None:
        """``chown -R`` (links not followed) to the task user, unless commands run as the worker."""
        ident = self.identity()
        if ident is not None:
            chown_tree(path, ident.uid, ident.gid)

    async def collect_artifact(
        self, path: str, kind: str, staging: Path, max_file_bytes: int | None = None
    ) -> list[ArtifactFile]:
        """Copy the artifact into ``staging`` through a helper running as the commands' user
        (files over ``max_file_bytes`` are sized by the helper, not copied)."""
        await self.settle_processes()
        return await copy_artifact(
            self._interpreter, self.task_dir, path, kind, staging, self.identity(), max_file_bytes
        )


async def _run_helper(argv: list[str], ident: Identity | None) -> tuple[int, bytes]:
    """A short helper command in ``/`` as ``ident`` (``None``: the worker itself); ``(exit status,
    stderr)``. As the task user it starts through the stub (``spawnstub.run_as_user``): forking
    the worker for ``user=`` costs 10–35 ms."""
    if ident is not None and spawnstub.launch_available():
        return await spawnstub.run_as_user(argv, ident.uid, ident.gid, ident.groups)
    if ident is not None:
        argv = runas.as_user(argv, ident.uid, ident.gid, ident.groups)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
    )
    _, err = await proc.communicate()
    return proc.returncode or 0, err


def stale_task_users(tasks_dir: Path, active: set[str]) -> list[TaskUser]:
    """``task_*`` users, other than ``active`` ones, whose home lies in ``tasks_dir``."""
    roots = {os.path.normpath(tasks_dir), os.path.realpath(tasks_dir)}
    found: list[TaskUser] = []
    for entry in pwd.getpwall():
        home = os.path.normpath(entry.pw_dir)
        if not entry.pw_name.startswith("task_") or entry.pw_name in active or entry.pw_uid == 0:
            continue
        if os.path.dirname(home) in roots:
            found.append(TaskUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(home)))
    return found


class MultiuserEngine(HostEngine):
    """Runs generic-worker payloads, each run as a fresh OS user. Needs root.

    Users come from a ``TaskUserPool`` of ``taskUserPoolSize`` users made in the background, so
    ``prepare`` hands over a ready user instead of running ``useradd`` on the task's critical
    path; each is removed after its one run.
    """

    name = "multiuser"

    def __init__(self, kill_grace: float = 3.0) -> None:
        super().__init__(kill_grace)
        self._accounts = Accounts()
        self._interpreter = ""
        self._pool: TaskUserPool | None = None

    async def initialise(self, config: WorkerConfig) -> None:
        if os.geteuid() != 0:
            raise ConfigError("the multiuser engine must run as root (it creates a user per task)")
        secure_config_file(config.source)
        check_signing_key(config.ed25519SigningKeyLocation)
        tasks_dir = config.tasks_dir
        create_tasks_dir(tasks_dir)
        try:
            check_traversable(tasks_dir)
        except OSError as e:
            raise ConfigError(f"cannot use tasksDir {str(tasks_dir)!r}: {e.strerror}") from e
        interpreter = helper_interpreter()
        if interpreter is None:
            raise ConfigError(
                "no Python interpreter executable by task users (tried the worker's, /usr/bin/python3)"
            )
        self._interpreter = interpreter
        self._config = config
        await self._detect_cgroups(config)
        await self.remove_stale_users()
        self._pool = TaskUserPool(self._accounts, tasks_dir, config.taskUserPoolSize, self._make_ready)
        self._pool.start()
        self._park_launches(config)

    def supported_payload_kinds(self) -> frozenset[str]:
        return frozenset({"generic"})

    def owns_task_dir(self, name: str) -> bool:
        """The homes of pool users — ready, running a task or being removed — are task dirs the
        worker's purge must leave alone (their names are not derived from a taskId)."""
        return self._pool is not None and self._pool.owns(name)

    async def shutdown(self) -> None:
        """Remove the pool's users that never ran a task, end the parked command stubs."""
        try:
            if self._pool is not None:
                await self._pool.close()
        finally:
            await super().shutdown()

    async def remove_stale_users(self) -> list[str]:
        """Remove ``task_*`` users (not of this engine's pool) whose home lies in this worker's
        tasksDir: a crashed worker's pool users and the users of its runs.

        Limiting it to our tasksDir keeps two workers on one host (tests) from removing each
        other's users; generic-worker assumes one worker per host and removes all ``task_*``.
        """
        config = self._require_config()
        removed: list[str] = []
        for user in stale_task_users(config.tasks_dir, set()):
            if self.owns_task_dir(user.name):
                continue
            await self._accounts.remove(user, "delete" if config.cleanUpTaskDirs else "keep")
            removed.append(user.name)
        if removed:
            log.info("removed stale task users: %s", ", ".join(removed))
        return removed

    async def _make_ready(self, user: TaskUser) -> None:
        """Finish a new pool user: the worker's private ``generic-worker/`` dir in its home, then
        ``runAfterUserCreation`` (run as the new user right after creation, as generic-worker
        runs it for the users it prepares ahead)."""
        private = user.home / "generic-worker"
        private.mkdir(mode=0o700)
        os.chmod(private, 0o700)
        config = self._require_config()
        if config.runAfterUserCreation:
            sandbox = self._sandbox_for(user, None)
            await self._run_after_user_creation(sandbox, config.runAfterUserCreation)

    def _sandbox_for(
        self,
        user: TaskUser,
        cgroup: TaskCgroup | None,
        parked: spawnstub.StubLaunch | None = None,
        lane: ReleaseLane | None = None,
    ) -> MultiuserSandbox:
        """A sandbox for ``user``; ``lane`` only for a run's (one that will be destroyed)."""
        config = self._require_config()
        assert self._pool is not None
        return MultiuserSandbox(
            user,
            self._pool,
            self._interpreter,
            clean_up=bool(config.cleanUpTaskDirs),
            grace=self.kill_grace,
            cgroup=cgroup,
            parked=parked,
            park=self._stub_maker(),
            on_destroyed=self._top_up_launches,
            lane=lane,
        )

    async def prepare(self, run: RunContext) -> MultiuserSandbox:
        if self._pool is None:
            raise RuntimeError("engine used before initialise()")
        try:
            user = await self._pool.take()
        except (AccountError, OSError) as e:
            raise InternalError(f"could not create a task user: {e}") from e
        try:
            cgroup, parked = await self._task_cgroup(user.name)
        except BaseException:
            await self._pool.retire(user, "delete")
            raise
        sandbox = self._sandbox_for(user, cgroup, parked, self._release_lane)
        try:
            st = os.lstat(user.home)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid:
                raise InternalError(f"the home of task user {user.name} ({user.home}) was tampered with")
        except OSError as e:
            await sandbox.destroy()
            raise InternalError(f"the home of task user {user.name} is gone: {e.strerror}") from e
        except BaseException:
            await sandbox.destroy()
            raise
        return sandbox

    async def _run_after_user_creation(self, sandbox: MultiuserSandbox, command: str) -> None:
        """``runAfterUserCreation`` as the new user in its home; failure is a worker panic (GW)."""
        sink = _Collect()
        result = await sandbox.execute([command], sandbox.base_env(), sink)
        # its sweep must be over before the user is handed out: it would kill the task's commands
        await sandbox.settle_processes()
        if not result.succeeded:
            raise HostBroken(
                f"runAfterUserCreation {command!r} failed for {sandbox.user.name}: "
                f"{result.start_error or f'exit code {result.exit_code}'}: {bytes(sink.data[-2000:]).decode(errors='replace')}"
            )


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data
