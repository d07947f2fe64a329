"""Auth API methods the worker and submitters use: expandScopes and currentScopes."""

from __future__ import annotations

from typing import Any

from tcworker.platform.api import Call, Endpoint
from tcworker.platform.auth.roles import normalise
from tcworker.platform.auth.service import AuthService


def endpoints(auth: AuthService) -> list[Endpoint]:
    async def expand_scopes(call: Call) -> Any:
        return {"scopes": list(auth.expand(call.payload["scopes"]))}

    async def current_scopes(call: Call) -> Any:
        return {"scopes": normalise(call.identity.scopes)}

    return [
        Endpoint(
            "expandScopes",
            "POST",
            "/scopes/expand",
            "auth:expand-scopes",
            expand_scopes,
            input="auth/scopeset.json",
        ),
        Endpoint("currentScopes", "GET", "/scopes/current", "auth:current-scopes", current_scopes),
    ]
