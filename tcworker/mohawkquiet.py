"""Stop mohawk from pretty-printing every Hawk request for a debug log nobody reads.

mohawk (the Hawk library under the official ``taskcluster`` client and the platform's auth)
builds its debug messages eagerly — ``log.debug("…".format(parts=pprint.pformat(url_parts)))``
— so each signed or verified request pays for ``pprint.pformat`` of the parsed URL and header
even when debug logging is off: about a third of the client's own CPU per call here (issue 15's
profile: ~10 % of the worker's CPU). ``install()`` gives mohawk's modules a ``pprint`` whose
``pformat`` formats only when that module's logger would emit a debug record. Nothing else in
mohawk changes; with ``logging.DEBUG`` on the ``mohawk`` loggers the messages are as before.
"""

from __future__ import annotations

import logging
import pprint
from types import ModuleType
from typing import Any

_NOT_FORMATTED = "<not formatted: mohawk debug logging is off>"


class _LazyPprint:
    """Stands in for the ``pprint`` module inside one mohawk module."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def pformat(self, obj: Any, *args: Any, **kwargs: Any) -> str:
        if self._logger.isEnabledFor(logging.DEBUG):
            return pprint.pformat(obj, *args, **kwargs)
        return _NOT_FORMATTED


def install() -> None:
    """Idempotent; call before the first signed request (``tcworker.tcapi.clients`` does)."""
    import mohawk.base
    import mohawk.util

    module: ModuleType
    for module in (mohawk.base, mohawk.util):
        if isinstance(getattr(module, "pprint", None), ModuleType):
            module.pprint = _LazyPprint(logging.getLogger(module.__name__))  # type: ignore[attr-defined]
