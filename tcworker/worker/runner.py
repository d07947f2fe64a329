"""Wiring of one worker process: engine, features, clients and the loop, from a validated config.

Shared by ``tcworker run`` and ``tcworker local`` so both start the worker the same way.
Worker-level failures keep generic-worker's exit codes: an unusable host or engine set-up is
``ConfigError`` (73) or ``HostBroken`` (69).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from tcworker.config import WorkerConfig
from tcworker.engines import create_engine
from tcworker.engines.base import Engine
from tcworker.errors import WorkerError
from tcworker.exitcodes import ExitCode
from tcworker.features import load_features
from tcworker.features.base import Feature
from tcworker.features.taskcluster_proxy import raise_open_file_limit
from tcworker.fsinfo import hint_slow_file_creation
from tcworker.tcapi.clients import Clients
from tcworker.worker import metrics as worker_metrics
from tcworker.worker.loop import WorkerLoop
from tcworker.worker.metrics import WorkerMetrics
from tcworker.worker.tasklog import Listener

log = logging.getLogger(__name__)


async def run_worker(
    config: WorkerConfig,
    *,
    state_dir: Path | None = None,
    log_listeners: Callable[[str, int], list[Listener]] | None = None,
    install_signal_handlers: bool = True,
    on_loop: Callable[[WorkerLoop], None] | None = None,
) -> int:
    """Run the worker until it decides to exit; returns the process exit code."""
    engine = create_engine(config.engine)
    clients = Clients(config.rootURL, config.credentials)
    features = load_features()
    # Before the engine starts anything: the host engines park their commands' stubs there
    # (LaunchPool), which keep the limits of that moment for the task's first command.
    raise_open_file_limit()
    try:
        await engine.initialise(config)
        for feature in features:
            await feature.initialise(config, clients)
    except WorkerError as e:
        log.error("%s", e)
        await _shut_down(engine, features, clients)
        return int(e.exit_code)
    loop = WorkerLoop(
        config,
        engine,
        features,
        clients,
        state_dir=state_dir,
        log_listeners=log_listeners,
        install_signal_handlers=install_signal_handlers,
    )
    if on_loop is not None:
        on_loop(loop)
    metrics_server = None
    if config.metricsListenAddress:
        loop.metrics = WorkerMetrics(lambda: len(loop.running), config.capacity, config.tasks_dir)
        try:
            metrics_server = await worker_metrics.serve(loop.metrics, config.metricsListenAddress)
        except (OSError, ValueError) as e:
            log.error("cannot serve metrics on %s: %s", config.metricsListenAddress, e)
            await _shut_down(engine, features, clients)
            return int(ExitCode.INVALID_CONFIG)
    log.info(
        "tcworker %s engine: worker %s/%s on %s (capacity %d)",
        config.engine,
        config.workerGroup,
        config.workerId,
        config.task_queue_id,
        config.capacity,
    )
    hint_slow_file_creation(config.tasks_dir, "tasksDir")
    try:
        code = await loop.run()
    except WorkerError as e:
        log.error("%s", e)
        code = e.exit_code
    finally:
        if metrics_server is not None:
            await metrics_server.cleanup()
        await _shut_down(engine, features, clients)
    return int(code if isinstance(code, int) else ExitCode.INTERNAL_ERROR)


async def _shut_down(engine: Engine, features: list[Feature], clients: Clients) -> None:
    """Features in reverse order, then the engine, then the HTTP session; each failure only logged."""
    for feature in reversed(features):
        try:
            await feature.shutdown()
        except Exception:
            log.exception("feature %s failed to shut down", feature.name)
    try:
        await engine.shutdown()
    except Exception:
        log.exception("engine %s failed to shut down", engine.name)
    await clients.close()
