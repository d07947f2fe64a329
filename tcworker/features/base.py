"""Feature / TaskFeature base classes: the plug-in shape of one run's pipeline (design G3).

A ``Feature`` exists once per worker process (pool-level gate, one-time host set-up); its
``for_run`` makes a ``TaskFeature`` per run (``None`` = the task does not ask for it), which
holds that run's state so capacity > 1 is safe. Every hook has a no-op default, so a feature
implements only what it uses (Dramatiq's middleware hooks rather than generic-worker's repeated
``return []string{}``).

How ``TaskRun`` drives them (``tcworker.worker.taskrun``), for each feature in
``tcworker.features.FEATURES`` order:

1. ``tf = feature.for_run(run)``; ``None`` → skipped.
2. ``feature.enabled(config)`` false → ``MalformedPayload`` naming the feature, the pool and the
   remedies (``disabled_reason(config)`` replaces the generic explanation when it returns text).
3. ``tf.required_scopes()`` checked against the task's scopes expanded through the auth service
   (missing → ``MalformedPayload`` listing them); ``tf.reserved_artifacts()`` registered
   (two features reserving one name → ``MalformedPayload``).
4. After every feature passed 2–3 and the engine prepared the sandbox: ``tf.stop`` is registered
   on an ``AsyncExitStack`` **before** ``await tf.start()``; the first failing start ends the
   start phase. Stops run in reverse order, every one of them, each exception appended to
   ``outcome.errors`` (the first error decides the resolution, ``tcworker.errors.resolution_of``).

Features never import each other; they share state only through the ``RunHandle`` (``run.feature_env``,
``run.sandbox``, ``run.reserved_artifacts`` …).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from tcworker.config import WorkerConfig
    from tcworker.engines.base import CancelReason, ExtraArtifact, ProcessResult, Sandbox, TaskLogWriter
    from tcworker.scopes import ScopeExpr
    from tcworker.worker.payload import RunModel
    from tcworker.worker.upload import ArtifactPublisher


@dataclass
class RunOutcome:
    """What a ``stop`` hook may need to know about the run so far.

    ``errors`` is the live list of collected errors (a stop may append to it, but raising is
    the usual way); ``last_result`` is the last command's result (``None`` when no command ran);
    ``abort_reason`` is the recorded cancel reason (max run time, worker shutdown, cancelled).
    ``commands_started`` tells whether the run got as far as the command executor.
    """

    errors: list[BaseException] = field(default_factory=list)
    last_result: ProcessResult | None = None
    abort_reason: CancelReason | None = None
    commands_started: bool = False

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None


class RunHandle(Protocol):
    """What a feature may see of the run (implemented by ``tcworker.worker.taskrun.TaskRun``).

    ``sandbox`` is set before any ``start`` is called. ``feature_env`` holds variables features
    set for the commands (``TASKCLUSTER_PROXY_URL``, ``TASK_USER_CREDENTIALS`` …): the command
    environment is ``sandbox.base_env()`` ← ``payload.env`` ← ``feature_env`` ← reserved variables,
    so the payload cannot override a feature's value. ``queue`` is a ``taskcluster.aio.Queue``
    with the run's *current* task credentials (it changes after each reclaim: read it each time).
    """

    config: WorkerConfig
    task_id: str
    run_id: int
    task: Mapping[str, Any]
    payload: Mapping[str, Any]
    payload_kind: str  # "generic" | "docker"
    engine_name: str  # "simple" | "multiuser" | "docker"
    feature_env: dict[str, str]
    reserved_artifacts: dict[str, str]  # artifact name → feature name that reserved it
    extra: dict[str, Any]  # per-run scratch shared with the engine (RunContext.extra)
    scratch_dir: Path  # worker-private (0700) per-run directory, removed after the run
    outcome: RunOutcome  # filled in as the run goes (last command result, abort reason)
    abort_reason: CancelReason | None
    publisher: ArtifactPublisher  # creates this run's artifacts with its current credentials
    # An extra artifact the worker core adds to this run (superseding's public/supersedes.json).
    extra_artifacts: Callable[[Path], ExtraArtifact | None] | None

    @property
    def log(self) -> TaskLogWriter:
        """The task log (``info`` / ``warn`` / ``error`` lines and raw output)."""
        ...

    @property
    def model(self) -> RunModel:
        """The validated payload in the worker's common shape."""
        ...

    @property
    def sandbox(self) -> Sandbox: ...

    @property
    def queue(self) -> Any: ...

    @property
    def task_queue_id(self) -> str: ...

    def abort(self, reason: CancelReason) -> None:
        """Stop the running command (if any) for ``reason``; the first reason wins."""
        ...

    def command_env(self) -> dict[str, str]:
        """The commands' environment: base env ← payload env ← feature env ← reserved variables."""
        ...


class TaskFeature:
    """One feature's state for one run. Hooks default to doing nothing."""

    def required_scopes(self) -> Sequence[ScopeExpr]:
        """Scope expressions that must *all* hold for ``task.scopes`` (use ``{"AnyOf": [...]}``
        for alternatives, as loopbackVideo's two accepted scopes)."""
        return ()

    def reserved_artifacts(self) -> Sequence[str]:
        """Artifact names this feature publishes itself; payload artifacts with these names are
        skipped with a warning (spec/worker.md §2.3)."""
        return ()

    async def start(self) -> None:
        """Set the feature up just before the commands; raise a ``tcworker.errors.TaskError`` to
        stop the run (its stop still runs)."""

    async def stop(self, outcome: RunOutcome) -> None:
        """Tear down / publish. Always called once ``start`` was attempted, in reverse order."""


class Feature:
    """One feature of the worker process: pool-level gate and per-run factory."""

    name: str = "feature"
    # The config key that switches the feature on for the pool (``enableLiveLog`` …), if any;
    # ``enabled`` reads it. ``None`` = always enabled.
    config_gate: str | None = None

    async def initialise(self, config: WorkerConfig) -> None:
        """One-time host set-up at worker start; raise ``ConfigError`` / ``HostBroken`` if unusable."""

    async def shutdown(self) -> None:
        """Undo ``initialise`` when the worker process ends (servers it started …)."""

    def enabled(self, config: WorkerConfig) -> bool:
        if self.config_gate is None:
            return True
        return bool(getattr(config, self.config_gate))

    def disabled_reason(self, config: WorkerConfig) -> str | None:
        """A sentence replacing the generic "not enabled on this pool" message, when there is a
        more specific reason (runTaskAsCurrentUser with capacity > 1)."""
        return None

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        """The per-run half, or ``None`` when this task does not request the feature."""
        return None


def payload_feature_flag(payload: Mapping[str, Any], flag: str, default: bool = False) -> bool:
    """``payload.features.<flag>`` with its schema default (helper for ``for_run``)."""
    features = payload.get("features")
    if not isinstance(features, Mapping):
        return default
    return bool(features.get(flag, default))
