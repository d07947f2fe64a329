"""The engine registry: engine name → lazy factory (design G10).

Plain data, no import side effects: the factory string is imported only when a worker actually
uses that engine, so a host without the Docker SDK working can still run the simple engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcworker.engines.base import Engine

# name → "module:Class". Order is the order shown in help texts.
ENGINES: dict[str, str] = {
    "simple": "tcworker.engines.simple:SimpleEngine",  # GW insecure engine: tasks run as the worker user
    "multiuser": "tcworker.engines.multiuser:MultiuserEngine",  # GW multiuser (headless): a user per task
    "docker": "tcworker.engines.docker.engine:DockerEngine",  # D2G behaviour: docker-worker payloads in containers
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name`` (``KeyError`` for unknown names)."""
    module_name, _, attr = ENGINES[name].partition(":")
    module = importlib.import_module(module_name)
    cls: type[Engine] = getattr(module, attr)
    return cls


def create_engine(name: str) -> Engine:
    """A new, not yet initialised engine instance."""
    return engine_class(name)()
