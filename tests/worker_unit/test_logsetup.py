"""The logging filter keeps the access token out of every worker log line."""

from __future__ import annotations

import logging

from tcworker.logsetup import RedactingFilter


def test_access_token_is_redacted_in_messages_and_arguments() -> None:
    redactor = RedactingFilter(["super-secret-token"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", ("super-secret-token",), None)
    redactor.filter(record)
    assert "super-secret-token" not in record.getMessage()
    assert "*****" in record.getMessage()


def test_tracebacks_are_redacted() -> None:
    redactor = RedactingFilter(["super-secret-token"])
    try:
        raise ValueError("bad super-secret-token")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    redactor.filter(record)
    assert record.exc_text is not None
    assert "super-secret-token" not in record.exc_text
