"""One run's cancellation: the recorded reason a run is being stopped, first reason wins (design G7).

Everything that can stop a run — the max-run-time timer, the resource monitor, a cancelled or lost
claim, the worker shutting down — calls ``Cancellation.cancel`` with a ``CancelReason``. The reason is recorded
before anything is signalled, later reasons are ignored (Buildkite's compare-and-swap), and the
listeners (the sandbox's ``abort``) are told once. ``tcworker.errors.resolution_of`` turns the
recorded reason into the run's resolution, so no other code has to remember why a run stopped.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class CancelReason(enum.Enum):
    """Why a run was stopped; ``str()`` is a sentence for the task log."""

    MAX_RUN_TIME = "max run time exceeded"
    WORKER_STOPPING = "worker is shutting down"
    CANCELLED = "task was cancelled"
    CLAIM_LOST = "the claim on this run was lost"
    HIGH_MEMORY = "sustained high memory usage"

    def __str__(self) -> str:
        return self.value

    @property
    def reports(self) -> bool:
        """Whether the worker still reports a resolution (a cancelled or lost run is the queue's)."""
        return self not in (CancelReason.CANCELLED, CancelReason.CLAIM_LOST)

    @property
    def kill_at_once(self) -> bool:
        """Whether the task is killed without a grace period: out of time (generic-worker kills at
        once) or out of memory (a grace period is more time for the host to run out of it)."""
        return self in (CancelReason.MAX_RUN_TIME, CancelReason.HIGH_MEMORY)


class Cancellation:
    """The cancellation state of one run (shared by the run, its features and its sandbox)."""

    def __init__(self) -> None:
        self.reason: CancelReason | None = None
        self.detail = ""  # what the queue said, for a cancelled or lost claim
        self._listeners: list[Callable[[CancelReason], None]] = []

    @property
    def cancelled(self) -> bool:
        return self.reason is not None

    def cancel(self, reason: CancelReason, detail: str = "") -> bool:
        """Record ``reason`` and tell the listeners; ``False`` when a reason was recorded before."""
        if self.reason is not None:
            return False
        self.reason = reason
        self.detail = detail
        for listener in list(self._listeners):
            try:
                listener(reason)
            except Exception:  # one broken listener must not keep the others from stopping
                log.exception("cancellation listener failed")
        return True

    def on_cancel(self, listener: Callable[[CancelReason], None]) -> None:
        """Call ``listener(reason)`` on cancellation (at once when the run is already cancelled)."""
        self._listeners.append(listener)
        if self.reason is not None:
            listener(self.reason)
