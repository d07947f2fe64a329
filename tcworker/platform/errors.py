"""Platform error kinds and the one JSON error body every service answers with (spec §1.5).

Service code raises :class:`PlatformError` subclasses only; the error wrapper in ``app.py`` (``answering``)
turns them into ``{"code", "message", "requestInfo"}`` with the status from :data:`STATUS`.
Anything else escaping a handler is a bug and becomes ``500 InternalServerError`` in the same
shape, so clients always see Taskcluster's error format.
"""

from __future__ import annotations

import errno
import json
import sqlite3
from typing import Any

from tcworker import tctime

STATUS: dict[str, int] = {
    "MalformedPayload": 400,
    "InvalidRequestArguments": 400,
    "InputValidationError": 400,
    "InputError": 400,
    "NoMatchingBackend": 400,
    "AuthenticationFailed": 401,
    "InsufficientScopes": 403,
    "ResourceNotFound": 404,
    "MethodNotAllowed": 405,
    "NoMatchingMethod": 406,
    "RequestConflict": 409,
    "ResourceExpired": 410,
    "InputTooLarge": 413,
    "InternalServerError": 500,
    "InsufficientStorage": 507,
}


class PlatformError(Exception):
    """An error with a Taskcluster error code; ``code`` picks the HTTP status."""

    code = "InternalServerError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    @property
    def status(self) -> int:
        return STATUS[self.code]


class MalformedPayload(PlatformError):
    code = "MalformedPayload"


class InvalidRequestArguments(PlatformError):
    code = "InvalidRequestArguments"


class InputValidationError(PlatformError):
    code = "InputValidationError"


class InputError(PlatformError):
    code = "InputError"


class NoMatchingBackend(PlatformError):
    code = "NoMatchingBackend"


class AuthenticationFailed(PlatformError):
    code = "AuthenticationFailed"


class InsufficientScopes(PlatformError):
    code = "InsufficientScopes"


class ResourceNotFound(PlatformError):
    code = "ResourceNotFound"


class MethodNotAllowed(PlatformError):
    code = "MethodNotAllowed"


class NoMatchingMethod(PlatformError):
    code = "NoMatchingMethod"


class RequestConflict(PlatformError):
    code = "RequestConflict"


class ResourceExpired(PlatformError):
    code = "ResourceExpired"


class InputTooLarge(PlatformError):
    code = "InputTooLarge"


class InternalServerError(PlatformError):
    code = "InternalServerError"


class InsufficientStorage(PlatformError):
    """The platform's data disk is full (local deviation: upstream has no such code)."""

    code = "InsufficientStorage"


DISK_FULL_MESSAGE = (
    "the platform's data disk is full: there is no space left under its --data-dir to store this "
    "request. Nothing of it was stored; free space on that disk, then retry."
)
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left" from the OS (ENOSPC, EDQUOT) or from SQLite (SQLITE_FULL)."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def error_body(
    code: str,
    message: str,
    *,
    method: str = "unknown",
    params: dict[str, Any] | None = None,
    payload: Any = None,
) -> bytes:
    """The upstream error document: message followed by the `---` footer, plus requestInfo."""
    now = tctime.to_json(tctime.now())
    status = STATUS.get(code, 500)
    footer = (
        f"\n\n---\n\n* method:     {method}\n* errorCode:  {code}\n"
        f"* statusCode: {status}\n* time:       {now}"
    )
    body = {
        "code": code,
        "message": message + footer,
        "requestInfo": {
            "method": method,
            "params": params or {},
            "payload": payload if payload is not None else {},
            "time": now,
        },
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode()
