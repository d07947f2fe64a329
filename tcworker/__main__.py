"""``python -m tcworker`` runs the same CLI as the ``tcworker`` console script."""

from __future__ import annotations

from tcworker.cli import run

raise SystemExit(run())
