"""Feature / TaskFeature base classes and the RunHandle features see: the plug-in shape of a run.

A ``Feature`` exists once per worker process (pool-level gate, one-time host set-up, optional
hooks around a claim); its ``for_run`` makes a ``TaskFeature`` per run (``None`` = the task does
not ask for it), which holds that run's state so capacity > 1 is safe. Every hook has a no-op
default, so a feature implements only what it uses (Dramatiq's middleware hooks rather than
generic-worker's repeated ``return []string{}``).

How the worker core drives them, for each feature in ``tcworker.features.FEATURES`` order:

0. ``feature.claimed(claim)`` right after claimWork (superseding may swap the run to execute);
   ``feature.released(claim, resolution)`` after the run was reported.
1. ``tf = feature.for_run(run)``; ``None`` → skipped.
2. ``feature.enabled(config)`` false → ``MalformedPayload`` naming the feature, the pool and the
   remedies (``disabled_reason(config)`` replaces the generic explanation when it returns text).
3. ``tf.required_scopes()`` checked against the task's scopes (expanded through the auth service
   only when needed; missing → ``MalformedPayload`` listing them); ``tf.reserved_artifacts()``
   registered (two features reserving one name → ``MalformedPayload``); ``await tf.admit()`` —
   every check that can refuse the task before the engine prepares anything.
4. After the engine prepared the sandbox: ``tf.stop`` is registered on an ``AsyncExitStack``
   **before** ``await tf.start()``; the first failing start ends the start phase. Stops run in
   reverse order, every one of them, each exception appended to ``outcome.errors``
   (``tcworker.errors.resolution_of`` decides the resolution from them).

Features never import each other or the worker core; they share state only through the
``RunHandle`` below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tcworker.cancellation import Cancellation, CancelReason

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.engines.base import ProcessResult, Sandbox, TaskLogWriter
    from tcworker.payload import RunModel
    from tcworker.scopes import ScopeExpr
    from tcworker.tcapi.claim import RunClaim
    from tcworker.tcapi.clients import Clients, Credentials
    from tcworker.tcapi.upload import ArtifactPublisher

log = logging.getLogger(__name__)


class CommandWatcher(Protocol):
    """Something a feature wants to happen around each command (the resource monitor samples
    memory while one runs). The command executor calls ``command_started`` right before a command
    and ``command_finished`` right after it (also when it was aborted or failed to start); the
    lines returned are written into that command's footer, before its ``Result`` line."""

    def command_started(self) -> None: ...

    async def command_finished(self) -> list[str]: ...


@dataclass
class RunOutcome:
    """What a ``stop`` hook may need to know about the run so far.

    ``errors`` is the live list of collected errors (a stop may append to it, but raising is
    the usual way); ``last_result`` is the last command's result (``None`` when no command ran);
    ``commands_started`` tells whether the run got as far as the command executor.
    ``cancellation`` is the run's one cancellation state (its ``reason``: max run time, worker
    shutdown, cancelled, claim lost).
    """

    cancellation: Cancellation = field(default_factory=Cancellation)
    errors: list[BaseException] = field(default_factory=list)
    last_result: ProcessResult | None = None
    commands_started: bool = False

    @property
    def abort_reason(self) -> CancelReason | None:
        return self.cancellation.reason

    @property
    def aborted(self) -> bool:
        return self.cancellation.cancelled

    def resolution(self) -> tuple[str, str | None]:
        """The resolution the run is heading for, by the one rule (``errors.resolution_of``)."""
        from tcworker.errors import resolution_of

        return resolution_of(self.errors, self.cancellation.reason)


class RunHandle:
    """What a feature may see of and do to one run (made by the worker core, one per run).

    ``feature_env`` holds variables features set for the commands (``TASKCLUSTER_PROXY_URL``,
    ``TASK_USER_CREDENTIALS``, decrypted ``encryptedEnv`` …): the command environment is
    ``sandbox.base_env()`` ← ``payload.env`` ← ``feature_env`` ← reserved variables.
    ``credentials`` are the run's *current* temporary credentials (they change after each
    reclaim: read them each time, or register ``on_credentials``); ``queue`` is a queue client
    with them. ``publisher`` creates this run's artifacts with them.
    """

    def __init__(
        self,
        *,
        config: WorkerConfig,
        clients: Clients,
        claim: RunClaim,
        task: Mapping[str, Any],
        payload: Mapping[str, Any],
        payload_kind: str,
        engine_name: str,
        log: TaskLogWriter,
        scratch_dir: Path,
        publisher: ArtifactPublisher,
        outcome: RunOutcome,
        reserved_env: Callable[[RunHandle], dict[str, str]],
    ) -> None:
        self.config = config
        self.clients = clients
        self._claim = claim
        self.task_id = claim.task_id
        self.run_id = claim.run_id
        self.task = task
        self.payload = payload
        self.payload_kind = payload_kind  # "generic" | "docker"
        self.engine_name = engine_name  # "simple" | "multiuser" | "docker"
        self.log = log
        self.scratch_dir = scratch_dir  # worker-private (0700) per-run directory, removed after the run
        self.publisher = publisher
        self.outcome = outcome
        self.feature_env: dict[str, str] = {}
        self.reserved_artifacts: dict[str, str] = {}  # artifact name → feature that reserved it
        # What the run consumed (mounted artifacts, downloaded files), as in-toto resource
        # descriptors ``{"name", "uri", "digest": {"sha256": hex}}``: features that fetch inputs
        # append here; chainOfTrust signs them as SLSA ``resolvedDependencies``.
        self.resolved_inputs: list[dict[str, Any]] = []
        # Called around every command by the command executor (see ``CommandWatcher``).
        self.command_watchers: list[CommandWatcher] = []
        self._reserved_env = reserved_env
        self._model: RunModel | None = None
        self._sandbox: Sandbox | None = None
        self._before_report: list[asyncio.Task[None]] = []
        # ``before_report`` work registered while the core holds it (``hold_before_report``).
        self._held: list[tuple[Coroutine[Any, Any, None], str]] | None = None

    # ---- set by the worker core as the run goes ----------------------------------------------
    def attach_model(self, model: RunModel) -> None:
        self._model = model

    def attach_sandbox(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self.outcome.cancellation.on_cancel(sandbox.abort)

    # ---- what features read ------------------------------------------------------------------
    @property
    def model(self) -> RunModel:
        """The validated payload in the worker's common shape."""
        if self._model is None:
            raise RuntimeError("payload not validated yet")
        return self._model

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            raise RuntimeError("sandbox not prepared yet")
        return self._sandbox

    @property
    def root_url(self) -> str:
        return self.clients.root_url

    @property
    def log_path(self) -> Path:
        """The task log file as written so far (chain of trust publishes a copy: certified.log)."""
        return Path(self.log.path)

    @property
    def task_queue_id(self) -> str:
        return self.config.task_queue_id

    @property
    def credentials(self) -> Credentials:
        return dict(self._claim.credentials)

    @property
    def queue(self) -> Any:
        return self._claim.queue

    @property
    def cancellation(self) -> Cancellation:
        return self.outcome.cancellation

    @property
    def abort_reason(self) -> CancelReason | None:
        return self.outcome.cancellation.reason

    def on_credentials(self, listener: Callable[[Credentials], None]) -> None:
        """Call ``listener(new_credentials)`` after every reclaim."""
        self._claim.on_reclaimed(listener)

    def abort(self, reason: CancelReason, detail: str = "") -> None:
        """Stop the run for ``reason``; the first reason wins (design G7). ``detail`` is kept with
        the reason (the resource monitor's thresholds end up in the failed run's error)."""
        self.outcome.cancellation.cancel(reason, detail)

    def expand_scopes(self, scopes: list[str]) -> Awaitable[list[str]]:
        return self.clients.expand_scopes(scopes)

    def before_report(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``work`` concurrently with the rest of the run; the report waits for it.

        For queue calls nothing after them depends on (the live log's link artifact): each one
        on the critical path of a short task costs a full round trip. ``work`` must handle its
        own errors (best effort); anything it raises is logged as ``what`` and otherwise ignored.
        It starts at once, or — when registered while features stop — once the backing log's
        artifact has been created (see ``hold_before_report``).
        """
        if self._held is not None:
            self._held.append((work, what))
            return

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("%s of %s/%s failed", what, self.task_id, self.run_id)

        self._before_report.append(asyncio.create_task(guarded(), name=what))

    # ---- called by the worker core around the log's publication --------------------------------
    def hold_before_report(self) -> None:
        """Keep ``before_report`` work from starting until ``release_before_report``. The core
        holds it while features stop and the backing log's ``createArtifact`` goes out: that call
        is on the report's path and the link is not, so the link going first (same loop, same
        queue) only delayed the upload (−0.9 ms for that call, measured under load)."""
        if self._held is None:
            self._held = []

    def release_before_report(self) -> None:
        """Start the held work (idempotent; ``settle`` releases too, so nothing stays unstarted)."""
        held, self._held = self._held or [], None
        for work, what in held:
            self.before_report(work, what)

    async def settle(self) -> None:
        """Wait for every ``before_report`` work (the worker core calls it before the report)."""
        self.release_before_report()
        while self._before_report:
            pending, self._before_report = self._before_report, []
            await asyncio.gather(*pending)

    def command_env(self) -> dict[str, str]:
        """base env ← payload env ← feature env ← reserved variables (spec/worker.md §2.2, §3.3)."""
        env = dict(self.sandbox.base_env())
        env.update(self.model.env)
        env.update(self.feature_env)
        env.update(self._reserved_env(self))
        return env


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

    async def admit(self) -> None:
        """Check what the task asks for before the engine prepares anything (no host changes);
        raise ``MalformedPayload`` (or another ``TaskError``) to refuse the task."""

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

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        """One-time host set-up at worker start; raise ``ConfigError`` / ``HostBroken`` if unusable.
        ``clients`` makes every Taskcluster client the feature needs (worker credentials)."""

    async def shutdown(self) -> None:
        """Release what ``initialise`` set up (background loops, servers)."""

    async def claimed(self, claim: dict[str, Any]) -> dict[str, Any]:
        """A claimWork entry before its run starts; returns the claim to run (superseding may
        run another claimed task instead)."""
        return claim

    async def released(self, claim: dict[str, Any], resolution: tuple[str, str | None]) -> None:
        """The run of ``claim`` (as returned by ``claimed``) is over and reported."""

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
