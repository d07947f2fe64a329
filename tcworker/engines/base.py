"""The contract between the worker core and an engine (design G2).

An ``Engine`` is made once per worker process; ``prepare`` turns one claimed run into a
``Sandbox`` that owns everything the run creates on the host (a directory, an OS user, a
container). Engines report facts (``ProcessResult``) and never decide a task's resolution:
``TaskRun`` does that. Library errors (``OSError``, ``docker.errors.*``, ``psutil.*``) are
translated at the engine boundary into the exceptions below or ``tcworker.errors`` task errors.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


class CancelReason(enum.Enum):
    """Why a running command was stopped; ``str()`` is a sentence for the task log (design G7)."""

    MAX_RUN_TIME = "max run time exceeded"
    WORKER_STOPPING = "worker is shutting down"
    CANCELLED = "task was cancelled"

    def __str__(self) -> str:
        return self.value


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

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.cancel_reason is None and self.start_error is None


class LogSink(Protocol):
    """Where command output goes: the run's task log. ``write`` must not block for long."""

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
    see ``payload_kind``). ``queue`` is a ``taskcluster.aio.Queue`` built with the run's task
    credentials (engines that fetch task-image artifacts use it). ``log`` is the task log.
    """

    task_id: str
    run_id: int
    task: Mapping[str, Any]
    payload: Mapping[str, Any]
    payload_kind: str  # "generic" | "docker"
    log: TaskLogWriter
    queue: Any = None
    root_url: str = ""
    # Expands ``assume:`` scopes through the auth service with the worker's own credentials;
    # engines that check feature scopes (docker caches, capabilities) call it on ``task["scopes"]``.
    expand_scopes: Callable[[list[str]], Awaitable[list[str]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraArtifact:
    """An artifact the engine itself produces (``dockerSave`` image, superseding records).

    Returned by the optional ``Sandbox.post_run_artifacts(staging, result)`` method, which
    ``TaskRun`` calls after the commands when the sandbox has it. ``expires`` is a TC timestamp
    or ``None`` for the task's expiry.
    """

    name: str
    file: ArtifactFile
    content_type: str
    expires: str | None = None


class TaskLogWriter(LogSink, Protocol):
    """The task log as engines see it: raw output plus ``[taskcluster …]`` lines."""

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


@runtime_checkable
class Sandbox(Protocol):
    """Everything one run owns on the host. ``destroy`` is idempotent and always called."""

    @property
    def task_dir(self) -> Path:
        """The host directory of this run (``TASK_WORKDIR`` for simple and multiuser)."""
        ...

    @property
    def workdir_in_task(self) -> str:
        """``TASK_WORKDIR`` as the task sees it (a host path, or a path inside the container)."""
        ...

    def base_env(self) -> dict[str, str]:
        """Defaults the engine provides (HOME, PATH, USER…); payload env is applied on top."""
        ...

    async def execute(self, argv: Sequence[str], env: Mapping[str, str], log: LogSink) -> ProcessResult:
        """Run one command in the task directory, streaming combined stdout/stderr to ``log``.

        Cancelling the awaiting coroutine kills the whole process tree (or container): interrupt,
        short grace, kill. Pass the reason with ``abort`` first so the result records it.
        """
        ...

    def abort(self, reason: CancelReason) -> None:
        """Record why the current command is being stopped and start stopping it (idempotent)."""
        ...

    async def collect_artifact(self, path: str, kind: str, staging: Path) -> list[ArtifactFile]:
        """Hand out a ``file`` or ``directory`` artifact at ``path`` (relative to the task dir,
        or absolute inside a container) with the task's own rights; copies go under ``staging``
        when needed. Raises an ``ArtifactProblem`` subclass when it cannot be published."""
        ...

    async def make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents with the task user's rights (mounts: a target
        the task user could not create must fail); raises ``OSError`` when it cannot."""
        ...

    async def give_to_task(self, path: Path) -> None:
        """Hand the tree at ``path`` (a mount the worker just placed) to the task user; engines
        whose commands run as the worker's user (simple, docker) do nothing."""
        ...

    async def destroy(self) -> None: ...


class Engine(Protocol):
    """One per worker process: checks the host once, then makes a sandbox per run."""

    name: str

    async def initialise(self, config: WorkerConfig) -> None:
        """Check the host (daemon reachable, running as root …); raise ``ConfigError`` if unusable."""
        ...

    async def prepare(self, run: RunContext) -> Sandbox: ...

    def supported_payload_kinds(self) -> frozenset[str]:
        """``{"generic"}`` or ``{"generic", "docker"}``."""
        ...

    async def shutdown(self) -> None: ...


# Optional engine / sandbox methods, called by the worker core only when present (getattr):
# - ``Engine.garbage_collect(required_free_bytes: int) -> None`` before each claim (worker.md §1.9).
# - ``Sandbox.post_run_artifacts(staging: Path, result: ProcessResult | None) -> list[ExtraArtifact]``
#   after the commands, before artifact upload.
