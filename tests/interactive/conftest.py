"""Fixtures for the interactive-shell tests: real platform, real `tcworker run` processes (the worker
harness of tests/helpers/workerproc.py, reused, not copied)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers.workerproc import WorkerProcess

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(worker_factory: WorkerFactory) -> WorkerFactory:
    """``start_worker(rootURL=..., engine="docker", ...)``: see ``worker_factory``."""
    return worker_factory
