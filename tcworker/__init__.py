"""tcworker: a Taskcluster worker with an embedded Taskcluster-compatible platform.

The package holds two programs that only ever talk over HTTP: ``tcworker.platform`` (queue,
object, auth, index and purge-cache services) and ``tcworker.worker`` (claims tasks and runs them
through an engine).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
