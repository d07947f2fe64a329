"""The contract between the worker core and an engine (design G2).

An ``Engine`` is made once per worker process; ``prepare`` turns one claimed run into a
``Sandbox`` that owns everything the run creates on the host (a directory, an OS user, a
container). Engines report facts (``ProcessResult``) and never decide a task's resolution:
``TaskRun`` does that. Library errors (``OSError``, ``docker.errors.*``, ``psutil.*``) are
translated at the engine boundary into the exceptions below or ``tcworker.errors`` task errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from tcworker.cancellation import CancelReason

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


# Special exit codes of generic-worker's aborted / unstartable commands (spec/worker.md §1.10).
EXIT_ABORTED = -4
EXIT_NOT_STARTED = -2


@dataclass(frozen=True)
class ProcessResult:
    """What happened to one command; a fact, not a verdict (Buildkite's ProcessExit)."""

    exit_code: int
    signal: int | None = None
    cancel_reason: CancelReason | None = None
    user_time: float = 0.0
    system_time: float = 0.0
    wall_time: float = 0.0
    start_error: str | None = None  # set when the command could not be started at all
    # Limits the kernel enforced on the command's processes (cgroup / container), one line each,
    # e.g. "task hit taskMaxProcesses=64 (pids.max): 12 forks refused".
    limit_hits: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return (
            self.exit_code == 0
            and self.cancel_reason is None
            and self.start_error is None
            and not self.limit_hits
        )


class LogSink(Protocol):
    """Where command output goes: the run's task log. ``write`` must not block for long; it is
    called from the thread draining the command's pipe (``pipepump``, host engines) or from the
    event loop (docker), one chunk at a time and in order, and never after ``execute`` returned."""

    def write(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class ArtifactFile:
    """One file the sandbox handed out for upload: a worker-readable host path.

    ``relative_name`` is the path below the requested directory ("" for a single file), always
    with ``/`` separators. ``path`` is a file the worker may read; for multiuser and docker it is
    a private copy made with the task's own rights, so nothing the task cannot read is uploaded.
    """

    relative_name: str
    path: Path
    size: int
    # Over the ``max_file_bytes`` given to ``collect_artifact``: nothing of it was copied (``path``
    # holds nothing to read), ``size`` is what the task's file system says. The artifacts feature
    # publishes an error artifact for it instead.
    oversize: bool = False


class ArtifactProblem(Exception):
    """A requested artifact cannot be published; ``reason`` is the queue's error-artifact reason."""

    reason = "invalid-resource-on-worker"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactMissing(ArtifactProblem):
    reason = "file-missing-on-worker"


class ArtifactNotReadable(ArtifactProblem):
    reason = "file-not-readable-on-worker"


class ArtifactInvalid(ArtifactProblem):
    """Wrong type (file vs directory), or a path / symlink that leaves the task's reach."""

    reason = "invalid-resource-on-worker"


@dataclass
class RunContext:
    """What an engine may know about the run it prepares a sandbox for.

    ``payload`` is the validated payload as a plain dict (generic-worker or docker-worker form,
    see ``payload_kind``). ``queue`` and ``index`` are ``taskcluster.aio`` clients built (by
    ``tcworker.tcapi.clients``) with the run's task credentials: engines that fetch task-image
    artifacts or look images up in the index use them. ``log`` is the task log.
    """

    task_id: str
    run_id: int
    task: Mapping[str, Any]
    payload: Mapping[str, Any]
    payload_kind: str  # "generic" | "docker"
    log: TaskLogWriter
    queue: Any = None
    index: Any = None
    root_url: str = ""


class TaskLogWriter(LogSink, Protocol):
    """The task log as engines see it: raw output plus ``[taskcluster …]`` lines."""

    path: Path  # the file the log is written to (chain of trust publishes a copy of it)

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def add_secrets(self, values: list[str]) -> None:
        """Mask these values in everything written from now on."""
        ...


class ShellChannel(Protocol):
    """One interactive shell running inside a sandbox (a ``docker exec`` on the docker engine),
    as the interactive server bridges it to a websocket: raw terminal bytes both ways."""

    async def read(self) -> bytes:
        """The next output (``b""``: the shell and its terminal are gone)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, columns: int, rows: int) -> None: ...

    async def close(self) -> None:
        """Kill every process of the shell and release its connection (idempotent)."""
        ...


class Unsupported(Exception):
    """This engine cannot do what a feature asked of it (the feature turns it into a task error)."""


@dataclass(frozen=True)
class Mount:
    """A host directory or file the task sees at ``task_path`` (a path in its own view)."""

    host_path: Path
    task_path: str
    read_only: bool = False


@dataclass(frozen=True)
class TaskNetwork:
    """A network of the run's own, which its containers join (``Sandbox.join_task_network``)."""

    name: str
    gateway: str  # the host's address on it: where per-run services (the proxy) listen
    subnet: str  # CIDR of the run's containers


class Sandbox:
    """Everything one run owns on the host. ``destroy`` is idempotent and always called.

    The first group of methods is what every engine implements. The second group is what only
    some engines can do; features call them explicitly and the defaults here say the engine
    cannot (``Unsupported``) or has nothing to tell, so no caller probes with ``getattr``.
    """

    @property
    def task_dir(self) -> Path:
        """The host directory of this run (``TASK_WORKDIR`` for simple and multiuser)."""
        raise NotImplementedError

    @property
    def workdir_in_task(self) -> str:
        """``TASK_WORKDIR`` as the task sees it (a host path, or a path inside the container)."""
        raise NotImplementedError

    def base_env(self) -> dict[str, str]:
        """Defaults the engine provides (HOME, PATH, USER…); payload env is applied on top."""
        raise NotImplementedError

    async def execute(self, argv: Sequence[str], env: Mapping[str, str], log: LogSink) -> ProcessResult:
        """Run one command in the task directory, streaming combined stdout/stderr to ``log``.

        Cancelling the awaiting coroutine kills the whole process tree (or container): interrupt,
        short grace, kill. Pass the reason with ``abort`` first so the result records it.
        """
        raise NotImplementedError

    def abort(self, reason: CancelReason) -> None:
        """Record why the current command is being stopped and start stopping it (idempotent)."""
        raise NotImplementedError

    async def collect_artifact(
        self, path: str, kind: str, staging: Path, max_file_bytes: int | None = None
    ) -> list[ArtifactFile]:
        """Hand out a ``file`` or ``directory`` artifact at ``path`` (relative to the task dir,
        or absolute inside a container) with the task's own rights; copies go under ``staging``
        when needed. A file larger than ``max_file_bytes`` is decided from its size before
        anything of it is copied, and handed out ``oversize``. Raises an ``ArtifactProblem``
        subclass when it cannot be published."""
        raise NotImplementedError

    async def destroy(self) -> None:
        raise NotImplementedError

    def task_process_ids(self) -> list[int] | None:
        """Pids of the processes of the running command (the whole tree it started), or ``None``
        when the engine cannot tell (containers). Blocking (reads ``/proc``): call it in a thread."""
        return None

    def memory_usage_is_cheap(self) -> bool:
        """Whether ``memory_usage_bytes`` is one small read (a cgroup file) that a caller may
        make on the event loop instead of a thread trip; False by default."""
        return False

    def memory_usage_bytes(self) -> int | None:
        """Memory the task's processes use right now, in bytes (``None`` = unknown, or nothing
        running): what the resource monitor logs per command. Blocking: callers run it in a thread
        (unless ``memory_usage_is_cheap``).

        The default sums the resident set size of ``task_process_ids()`` with psutil (host
        engines; pages shared between the processes are counted once per process, so it is an
        upper bound). Engines with a better source override it (docker: the container's stats;
        host sandboxes with a per-task cgroup: the kernel's count for the group, falling back to
        this)."""
        pids = self.task_process_ids()
        if pids is None:
            return None
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return total

    # ---- what only some engines can do -------------------------------------------------------
    def add_mount(self, mount: Mount) -> None:
        """Make ``mount`` visible to the task's commands from the next command on."""
        raise Unsupported(f"the {type(self).__name__} cannot mount host paths into the task")

    def configure_container(self, options: Any) -> None:
        """Container options chosen by features (docker engine: capabilities, devices …)."""
        raise Unsupported("this engine does not run containers")

    async def save_image(self, dest: Path) -> ArtifactFile | None:
        """``docker save`` of the task's last container as an image tarball at ``dest``
        (``None`` when no container ran)."""
        raise Unsupported("this engine has no container image to save")

    def image_facts(self) -> dict[str, str]:
        """What the run's image was (``imageHash``, ``imageArtifactHash``), for provenance."""
        return {}

    def give_to_task(self, path: Path) -> None:
        """Hand ``path`` (a tree made by the worker for this run) to the task's own user.
        Blocking (it may walk a large tree): callers run it in a thread. The default is for
        engines whose commands run as the worker's own user or as the image's (docker)."""

    async def make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents with the task user's rights, so a place the
        task user could not create itself fails (mounts, spec §2.5); raises ``OSError``. The
        default is for engines whose commands run as the worker's own user (or, docker, where
        mounts lie inside the bind-mounted task directory)."""
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)

    async def task_user_can_read(self, path: str) -> bool:
        """Whether the task's commands could open ``path`` (chain of trust checks its key).
        The default is for engines whose commands run as the worker's own user."""
        return True

    async def set_os_groups(self, groups: Sequence[str]) -> None:
        """Run the task's commands with these extra OS groups (``osGroups``)."""
        raise Unsupported(f"the {type(self).__name__} cannot add OS groups to a task")

    async def join_task_network(self) -> TaskNetwork:
        """Create the run's own network (once; later calls return it); every container created
        afterwards joins it instead of the default bridge; removed in ``destroy``."""
        raise Unsupported("this engine does not run containers, so it has no network per task")

    def add_host(self, name: str, address: str) -> None:
        """An ``/etc/hosts`` entry ``address name`` in every container created from now on."""
        raise Unsupported("this engine does not run containers")

    def task_uid(self) -> int | None:
        """The uid the task's commands run as when it is not the worker's own (multiuser's task
        user), so per-run services can admit only that user; ``None`` = the worker's user."""
        return None

    def shell_identity(self) -> tuple[Path, int, int, tuple[int, ...]] | None:
        """Where and as whom an interactive shell of this run starts (``features.interactive``):
        ``(directory, uid, gid, groups)``, or ``None`` for the worker's own user in the task
        directory. Engines that cannot give a host shell (containers) raise ``Unsupported``."""
        raise Unsupported(f"the {type(self).__name__} cannot open an interactive shell")

    async def open_shell(self, env: Mapping[str, str]) -> ShellChannel:
        """Start ``bash`` (else ``sh``) inside the task's running container, as the task's user,
        in its working directory, with ``env`` (``features.interactive`` on container engines,
        which cannot give a host shell: see ``shell_identity``). Raises ``Unsupported`` when the
        engine cannot, or when no container of the task is running right now."""
        raise Unsupported(f"the {type(self).__name__} cannot open a shell inside the task")

    def keep_container_after_command(self) -> None:
        """docker-worker's interactive keep-alive: from the next command on, the command's
        container stays up after the command exited (``execute`` returns its exit code at once)
        until ``release_container``, so shells can still enter it."""
        raise Unsupported(f"the {type(self).__name__} has no container to keep alive")

    async def release_container(self) -> None:
        """End what ``keep_container_after_command`` kept (stop the container; idempotent)."""

    async def run_as_current_user(self) -> Path:
        """Switch the run to the worker's own user (``runTaskAsCurrentUser``); returns the path of
        the task user's credentials file."""
        raise Unsupported("only the multiuser engine can run a task as the current user")


class Engine:
    """One per worker process: checks the host once, then makes a sandbox per run."""

    name: str = "engine"

    async def initialise(self, config: WorkerConfig) -> None:
        """Check the host (daemon reachable, running as root …); raise ``ConfigError`` /
        ``HostBroken`` if unusable."""
        raise NotImplementedError

    async def prepare(self, run: RunContext) -> Sandbox:
        raise NotImplementedError

    def supported_payload_kinds(self) -> frozenset[str]:
        """``{"generic"}`` or ``{"generic", "docker"}``."""
        return frozenset({"generic"})

    def owns_task_dir(self, name: str) -> bool:
        """Whether the ``task_*`` directory ``name`` in ``tasksDir`` belongs to the engine although
        no running task is named after it (multiuser: homes of its pool users), so the worker's
        purge of old task directories leaves it. Called from a worker thread: must be cheap and
        thread-safe."""
        return False

    async def garbage_collect(self, required_free_bytes: int) -> None:
        """Free disk before a claim (worker.md §1.9); engines without disk of their own do nothing."""

    async def shutdown(self) -> None:
        """Release what ``initialise`` set up."""
