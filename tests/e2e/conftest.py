"""Fixtures for the worker end-to-end tests: platform and worker as separate processes.

`shared_platform` (tests/conftest.py) is one `tcworker queue serve` for the session; each test
isolates itself with its own workerType (task queue), so workers of different tests never claim
each other's tasks. Tests needing a special platform (short claim timeout) use `platform_server`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers.workerproc import WorkerProcess

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(worker_factory: WorkerFactory) -> WorkerFactory:
    """``start_worker(capacity=4, platform=..., env=..., **config)``: see ``worker_factory``."""
    return worker_factory
