"""docker-worker scope rules (spec/worker.md §3.2, §3.5, §3.6, §3.8): one test per rule, then the check."""

from __future__ import annotations

from typing import Any

import pytest

from tcworker.errors import MalformedPayload, ResourceUnavailable
from tcworker.features.docker_scopes import (
    check_scopes,
    image_scopes,
    is_private_image,
    normalized_image_name,
    required_scopes,
    split_image_name,
)

PROV, WT = "prov", "wt"
Q = f"{PROV}/{WT}"


def req(payload: dict[str, Any], **kw: Any) -> list[Any]:
    return required_scopes(
        {"image": "busybox", "maxRunTime": 1, **payload}, {}, provisioner_id=PROV, worker_type=WT, **kw
    )


def test_plain_public_image_needs_nothing() -> None:
    assert req({}) == []
    assert req({"image": {"type": "docker-image", "name": "ubuntu:22.04"}}) == []


def test_cache_scopes_one_per_cache_sorted() -> None:
    assert req({"cache": {"b-cache": "/b", "a-cache": "/a"}}) == [
        "docker-worker:cache:a-cache",
        "docker-worker:cache:b-cache",
    ]


def test_privileged_accepts_global_or_per_queue_scope() -> None:
    assert req({"capabilities": {"privileged": True}}) == [
        {"AnyOf": ["docker-worker:capability:privileged", f"docker-worker:capability:privileged:{Q}"]}
    ]
    assert req({"capabilities": {"privileged": False}}) == []


def test_devices_only_the_requested_ones() -> None:
    got = req({"capabilities": {"devices": {"kvm": True, "loopbackAudio": False, "hostSharedMemory": True}}})
    assert got == [
        {
            "AnyOf": [
                "docker-worker:capability:device:hostSharedMemory",
                f"docker-worker:capability:device:hostSharedMemory:{Q}",
            ]
        },
        {"AnyOf": ["docker-worker:capability:device:kvm", f"docker-worker:capability:device:kvm:{Q}"]},
    ]


def test_disable_seccomp() -> None:
    assert req({"capabilities": {"disableSeccomp": True}}) == ["docker-worker:capability:disableSeccomp"]


@pytest.mark.parametrize("flag", ["allowPtrace", "balrogVPNProxy", "balrogStageVPNProxy"])
def test_scoped_features(flag: str) -> None:
    assert req({"features": {flag: True}}) == [f"docker-worker:feature:{flag}"]
    assert req({"features": {flag: False}}) == []


def test_unscoped_features_need_nothing() -> None:
    assert (
        req(
            {
                "features": {
                    "taskclusterProxy": True,
                    "dockerSave": True,
                    "localLiveLog": True,
                    "chainOfTrust": True,
                }
            }
        )
        == []
    )


@pytest.mark.parametrize("kind", ["task-image", "indexed-image"])
def test_artifact_images_private_path_needs_get_artifact(kind: str) -> None:
    extra = {"taskId": "abc"} if kind == "task-image" else {"namespace": "a.b"}
    assert req({"image": {"type": kind, "path": "private/image.tar", **extra}}) == [
        "queue:get-artifact:private/image.tar"
    ]
    assert req({"image": {"type": kind, "path": "public/image.tar", **extra}}) == []


def test_image_name_split_follows_docker() -> None:
    assert split_image_name("ubuntu") == ("docker.io", "library/ubuntu")
    assert split_image_name("me/app:1") == ("docker.io", "me/app:1")
    assert split_image_name("Reg.Example.com/team/app") == ("reg.example.com", "team/app")
    assert split_image_name("localhost:5000/app") == ("localhost:5000", "app")
    assert split_image_name("localhost/app") == ("localhost", "app")
    assert normalized_image_name("reg.io/app") == "reg.io/app:latest"
    assert normalized_image_name("localhost:5000/app") == "localhost:5000/app:latest"
    assert normalized_image_name("app@sha256:00") == "app@sha256:00"


def test_private_registry_matching() -> None:
    assert not is_private_image("reg.example.com/app:1", [])
    assert is_private_image("reg.example.com/app:1", ["reg.example.com"])
    assert not is_private_image("other.example.com/app:1", ["reg.example.com"])
    assert is_private_image("reg.example.com/team/app:1", ["reg.example.com/team"])
    assert not is_private_image("reg.example.com/teamx/app:1", ["reg.example.com/team"])
    assert is_private_image("me/app", ["docker.io"]) and is_private_image("ubuntu", ["index.docker.io"])
    assert is_private_image("docker.io/me/app", ["registry.hub.docker.com/me"])


def test_private_image_scope_only_with_credentials() -> None:
    assert image_scopes("reg.example.com/app:1") == []
    assert image_scopes("reg.example.com/app:1", ["reg.example.com"]) == [
        "docker-worker:image:reg.example.com/app:1"
    ]
    assert image_scopes({"type": "docker-image", "name": "reg.example.com/app"}, ["reg.example.com"]) == [
        {
            "AnyOf": [
                "docker-worker:image:reg.example.com/app",
                "docker-worker:image:reg.example.com/app:latest",
            ]
        }
    ]


def test_all_rules_together_in_stable_order() -> None:
    got = req(
        {
            "image": {"type": "task-image", "taskId": "x", "path": "private/i.tar"},
            "cache": {"c": "/c"},
            "capabilities": {"privileged": True, "devices": {"kvm": True}, "disableSeccomp": True},
            "features": {"allowPtrace": True},
        }
    )
    assert [g if isinstance(g, str) else g["AnyOf"][0] for g in got] == [
        "queue:get-artifact:private/i.tar",
        "docker-worker:cache:c",
        "docker-worker:capability:privileged",
        "docker-worker:capability:device:kvm",
        "docker-worker:capability:disableSeccomp",
        "docker-worker:feature:allowPtrace",
    ]


# ---- check_scopes ----------------------------------------------------------------------------

PAYLOAD = {
    "image": "busybox",
    "maxRunTime": 10,
    "cache": {"my-cache": "/cache"},
    "capabilities": {"privileged": True},
    "features": {"allowPtrace": True},
}


async def check(scopes: list[str], expand: Any = None, payload: dict[str, Any] = PAYLOAD) -> None:
    await check_scopes(payload, {"scopes": scopes}, provisioner_id=PROV, worker_type=WT, expand=expand)


async def test_direct_scopes_pass_without_expansion() -> None:
    async def never(scopes: list[str]) -> list[str]:
        raise AssertionError("expand must not be called when the direct check passes")

    await check(
        [
            "docker-worker:cache:my-*",
            f"docker-worker:capability:privileged:{Q}",
            "docker-worker:feature:allowPtrace",
        ],
        never,
    )
    await check(["docker-worker:*"], never)


async def test_missing_scopes_named_with_task_scopes_listed() -> None:
    with pytest.raises(MalformedPayload) as info:
        await check(["docker-worker:cache:other", "queue:foo"])
    text = str(info.value)
    for needed in (
        "docker-worker:cache:my-cache",
        "docker-worker:capability:privileged",
        f"docker-worker:capability:privileged:{Q}",
        "docker-worker:feature:allowPtrace",
    ):
        assert needed in text
    assert "task.scopes:\n  docker-worker:cache:other\n  queue:foo" in text


async def test_empty_task_scopes_message() -> None:
    with pytest.raises(MalformedPayload, match="task.scopes is empty"):
        await check([], payload={"image": "x", "maxRunTime": 1, "cache": {"c": "/c"}})


async def test_assume_scopes_are_expanded_when_direct_check_fails() -> None:
    calls: list[list[str]] = []

    async def expand(scopes: list[str]) -> list[str]:
        calls.append(scopes)
        return [
            *scopes,
            "docker-worker:cache:*",
            "docker-worker:capability:privileged",
            "docker-worker:feature:*",
        ]

    await check(["assume:project:x"], expand)
    assert calls == [["assume:project:x"]]


async def test_expansion_that_still_misses_names_the_missing_scope() -> None:
    async def expand(scopes: list[str]) -> list[str]:
        return [*scopes, "docker-worker:cache:*", "docker-worker:feature:allowPtrace"]

    with pytest.raises(MalformedPayload) as info:
        await check(["assume:project:x"], expand)
    assert "docker-worker:capability:privileged" in str(info.value)
    assert "docker-worker:cache:my-cache" not in str(info.value).split("task.scopes")[0]


async def test_no_expansion_without_assume_scopes() -> None:
    async def never(scopes: list[str]) -> list[str]:
        raise AssertionError("nothing to expand")

    with pytest.raises(MalformedPayload):
        await check(["queue:*"], never)


async def test_expansion_failure_is_resource_unavailable() -> None:
    async def broken(scopes: list[str]) -> list[str]:
        raise ConnectionError("auth service down")

    with pytest.raises(ResourceUnavailable, match="auth service down"):
        await check(["assume:*"], broken)


async def test_no_requirements_no_check() -> None:
    await check([], payload={"image": "busybox", "maxRunTime": 1})
