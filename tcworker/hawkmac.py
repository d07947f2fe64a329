"""The fields ``mohawk.util.calculate_mac`` reads from a resource, shared by both Hawk users.

The platform (verifying) and the taskcluster-proxy (signing) both compute the MAC with mohawk but
hand it this small record instead of a ``mohawk.base.Resource``, which would re-parse the URL and
pretty-print the whole request into a debug string on every call.
"""

from __future__ import annotations

from dataclasses import dataclass


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
