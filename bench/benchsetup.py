"""What every bench script does first: ``import benchsetup`` before any other import.

``python bench/<script>.py`` puts bench/ first on ``sys.path``, where sibling scripts shadow
standard-library modules of the same name (``bench/queue.py`` would be imported for ``queue`` by
asyncio and concurrent.futures). Importing this module — found there, before the path is fixed —
takes bench/ off the path, so the standard library wins for everything imported after it.
A bench module is then loaded by file, never by name: ``bench_worker()`` is ``bench/worker.py``
(its platform and worker processes, task creation, drains), shared by the scripts built on it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent

if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)


def bench_worker() -> ModuleType:
    """``bench/worker.py`` as a module (loaded once per process)."""
    loaded = sys.modules.get("bench_worker")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("bench_worker", HERE / "worker.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_worker"] = module
    spec.loader.exec_module(module)
    return module
