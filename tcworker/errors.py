"""The worker's error taxonomy; each task error carries the resolution it causes (design G4).

::

    TcWorkerError
    ├── TaskError                      resolution = (state, reason)
    │   ├── TaskFailed                 failed / -
    │   │   └── ResourceLimitHit       failed / - (taskMaxProcesses, taskMaxMemoryMegabytes)
    │   ├── MalformedPayload           exception / malformed-payload
    │   ├── ResourceUnavailable        exception / resource-unavailable
    │   ├── IntermittentTask           exception / intermittent-task
    │   ├── WorkerShutdown             exception / worker-shutdown
    │   ├── InternalError              exception / internal-error
    │   └── TaskCancelled              (nothing reported: the queue already resolved the run)
    └── WorkerError                    exit_code: the worker process exits with it
        ├── ConfigError                73 (or 64 when the file cannot be read at all)
        └── HostBroken                 69

The first error of a run decides its resolution, except that any ``WorkerShutdown`` wins
(generic-worker's ``resolve()``), and a recorded cancellation decides over both; see
``resolution_of``, the one place that turns what happened to a run into its resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from tcworker.cancellation import CancelReason
from tcworker.exitcodes import ExitCode


class TcWorkerError(Exception):
    """Root of everything tcworker raises on purpose."""


class TaskError(TcWorkerError):
    resolution: tuple[str, str | None] = ("exception", "internal-error")


class TaskFailed(TaskError):
    resolution = ("failed", None)


class ResourceLimitHit(TaskFailed):
    """The task's cgroup (or container) hit ``taskMaxProcesses`` / ``taskMaxMemoryMegabytes``.

    A kind of its own because it fails the task even when every command exited 0 afterwards
    (a fork refused or a process OOM-killed is a broken run, whatever the shell reported).
    """


class MalformedPayload(TaskError):
    resolution = ("exception", "malformed-payload")


class ResourceUnavailable(TaskError):
    resolution = ("exception", "resource-unavailable")


class IntermittentTask(TaskError):
    resolution = ("exception", "intermittent-task")


class WorkerShutdown(TaskError):
    resolution = ("exception", "worker-shutdown")


class InternalError(TaskError):
    resolution = ("exception", "internal-error")


class TaskCancelled(TaskError):
    """Reclaim or report answered 409: the run is no longer ours; report nothing."""

    resolution = ("none", None)


class WorkerError(TcWorkerError):
    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class ConfigError(WorkerError):
    exit_code = ExitCode.INVALID_CONFIG

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.INVALID_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HostBroken(WorkerError):
    exit_code = ExitCode.INTERNAL_ERROR


def error_for_cancel(reason: CancelReason, detail: str = "") -> TaskError:
    """The error a recorded cancellation means for the run (generic-worker's abort handling)."""
    if reason is CancelReason.MAX_RUN_TIME:
        return TaskFailed(f"Task aborted - {reason}")
    if reason is CancelReason.HIGH_MEMORY:  # the detail names the thresholds (resource monitor)
        return TaskFailed(detail or f"Task aborted - {reason}")
    if reason is CancelReason.WORKER_STOPPING:
        return WorkerShutdown(f"Task aborted - {reason}")
    return TaskCancelled(f"Task aborted - {reason}" + (f" ({detail})" if detail else ""))


def resolution_of(
    errors: Sequence[BaseException], cancelled: CancelReason | None = None
) -> tuple[str, str | None]:
    """The run's resolution from its collected errors and its recorded cancellation reason.

    A cancelled or lost claim means nothing is reported (``("none", None)``); worker shutdown (a
    ``WorkerShutdown`` anywhere, or the recorded reason) is ``exception/worker-shutdown``; otherwise
    the first error decides (max run time's ``failed`` when no error came before it), an
    unexpected exception is an internal error, and no error at all is ``completed``.
    """
    if cancelled is not None and not cancelled.reports:
        return TaskCancelled.resolution
    if any(isinstance(e, TaskCancelled) for e in errors):
        return TaskCancelled.resolution
    if cancelled is CancelReason.WORKER_STOPPING or any(isinstance(e, WorkerShutdown) for e in errors):
        return WorkerShutdown.resolution
    if not errors:
        return error_for_cancel(cancelled).resolution if cancelled is not None else ("completed", None)
    first = errors[0]
    if isinstance(first, TaskError):
        return first.resolution
    return InternalError.resolution
