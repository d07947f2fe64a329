"""check_scopes with role expansion through the local platform's auth ``expandScopes`` (real HTTP)."""

from __future__ import annotations

from typing import Any

import pytest
import taskcluster.aio
from helpers.superseding import WORKER

from tcworker.errors import MalformedPayload, ResourceUnavailable
from tcworker.features.docker_scopes import check_scopes

PAYLOAD = {"image": "busybox", "maxRunTime": 5, "cache": {"c1": "/c"}, "capabilities": {"privileged": True}}


def expander(root_url: str, credentials: dict[str, str]) -> Any:
    auth = taskcluster.aio.Auth({"rootUrl": root_url, "credentials": dict(credentials), "maxRetries": 0})

    async def expand(scopes: list[str]) -> list[str]:
        return list((await auth.expandScopes({"scopes": scopes}))["scopes"])

    return expand


async def test_role_grants_the_docker_scopes(sup_platform: Any) -> None:
    expand = expander(sup_platform.root_url, WORKER)
    await check_scopes(
        PAYLOAD, {"scopes": ["assume:project:tcw-docker"]}, provisioner_id="p", worker_type="w", expand=expand
    )


async def test_role_without_the_scope_is_malformed_payload(sup_platform: Any) -> None:
    expand = expander(sup_platform.root_url, WORKER)
    payload = {**PAYLOAD, "features": {"allowPtrace": True}}
    with pytest.raises(MalformedPayload) as info:
        await check_scopes(
            payload,
            {"scopes": ["assume:project:tcw-docker"]},
            provisioner_id="p",
            worker_type="w",
            expand=expand,
        )
    assert "docker-worker:feature:allowPtrace" in str(info.value)
    assert "docker-worker:cache:c1" not in str(info.value).split("task.scopes")[0]


async def test_auth_service_down_is_resource_unavailable() -> None:
    expand = expander("http://127.0.0.1:9", WORKER)
    with pytest.raises(ResourceUnavailable):
        await check_scopes(
            PAYLOAD,
            {"scopes": ["assume:project:tcw-docker"]},
            provisioner_id="p",
            worker_type="w",
            expand=expand,
        )
