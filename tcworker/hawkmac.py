"""Hawk's MAC and payload hash, shared by every Hawk user in tcworker.

``payload_hash`` and ``header_mac`` compute what ``mohawk.util.calculate_payload_hash`` and
``calculate_mac("header", ...)`` return for sha256 credentials, from Hawk's normalized strings
(spec §4.2): the platform verifies with them and the worker's client signs with them
(``tcworker.tcapi.hawksender``). mohawk's own functions pretty-print the whole body or format a
debug message and build an ``hmac.HMAC`` object on every call, which cost more than the rest of a
request's authentication; the MAC here is one ``macs.hmac_sha256`` (not ``hmac.digest``, which
releases the GIL: see ``macs``). ``MacInput`` is the record the other paths (the
taskcluster-proxy, other algorithms) hand to mohawk instead of a ``mohawk.base.Resource``, which
would re-parse the URL and pretty-print the whole request into a debug string on every call.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from tcworker import macs


def payload_hash(content_type: str, body: bytes) -> str:
    """Hawk payload hash (sha256) of ``body`` sent as ``content_type`` (the media type alone,
    lower case, as Hawk normalizes it)."""
    digest = hashlib.sha256(b"hawk.1.payload\n" + content_type.encode() + b"\n" + body + b"\n").digest()
    return base64.b64encode(digest).decode()


def header_mac(
    key: str | bytes, attrs: Mapping[str, str], method: str, resource: str, host: str, port: str
) -> bytes:
    """The MAC of a Hawk header request (base64): Hawk's normalized string — ``hawk.1.header``,
    ts, nonce, method, resource, host, port, hash, ext, then app and dlg when ``app`` is given,
    one per line — signed with ``key``."""
    lines = [
        "hawk.1.header",
        attrs["ts"],
        attrs["nonce"],
        method,
        resource,
        host,
        port,
        attrs.get("hash") or "",
        attrs.get("ext") or "",
    ]
    if attrs.get("app"):
        lines += [attrs["app"], attrs.get("dlg") or ""]
    lines.append("")
    key_bytes = key if isinstance(key, bytes) else key.encode("ascii")
    return base64.b64encode(macs.hmac_sha256(key_bytes, "\n".join(lines).encode("utf-8")))


@dataclass(frozen=True)
class MacInput:
    """One request as Hawk's MAC sees it."""

    credentials: dict[str, str]
    timestamp: str
    nonce: str
    method: str
    name: str
    host: str
    port: str
    ext: str | None
    app: str | None = None
    dlg: str | None = None
