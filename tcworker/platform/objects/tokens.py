"""Self-authorising data URLs: HMAC-signed tokens for the PUT and GET links the object service hands out.

The links must work without Taskcluster credentials (spec §3.5), survive a restart (the key is
kept in the database) and be unguessable. A token carries what it allows (``get``/``put``, the
object name, the upload id for PUTs) and its expiry, signed with the server's secret key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def sign(self, kind: str, name: str, expires_s: int, upload_id: str = "", length: int = -1) -> str:
        """``length`` (PUT only) is the contentLength the uploader promised; -1 = unchecked."""
        claims = _b64(
            json.dumps([kind, name, upload_id, int(expires_s), length], separators=(",", ":")).encode()
        )
        mac = _b64(hmac.new(self._key, claims.encode(), hashlib.sha256).digest())
        return f"{claims}.{mac}"

    def check(self, kind: str, token: str) -> tuple[str, str, int] | None:
        """(name, upload id, length) when the token is genuine, of ``kind`` and unexpired; else None."""
        claims, _, mac = token.partition(".")
        expected = _b64(hmac.new(self._key, claims.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
            return None
        try:
            value: Any = json.loads(_unb64(claims))
            got_kind, name, upload_id, expires_s, length = value
        except (ValueError, TypeError, binascii.Error):
            return None
        if got_kind != kind or not isinstance(expires_s, int) or expires_s < time.time():
            return None
        return str(name), str(upload_id), int(length)
