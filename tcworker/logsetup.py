"""Logging set-up for the worker process, with a filter that keeps credentials out of every log.

Secrets are registered once (the access token, task credentials as they arrive) and replaced by
``*****`` in each record's final message before any handler sees it (design G9; scriptworker's
``{********}``). Formatting happens in the filter so secrets passed as ``%s`` arguments are caught.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

REDACTED = "*****"


class RedactingFilter(logging.Filter):
    """Replaces every registered secret in the formatted message (and the traceback text)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def setup_logging(level: int = logging.INFO, secrets: Iterable[str] = ()) -> RedactingFilter:
    """Log to stderr with timestamps; returns the redaction filter so more secrets can be added."""
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_tcworker", False):
            root.removeHandler(old)
    handler._tcworker = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party debug output carries request headers (Hawk ``ext`` with certificates): keep it out.
    for noisy in ("aiohttp.access", "taskcluster", "mohawk", "urllib3", "docker"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return redactor
