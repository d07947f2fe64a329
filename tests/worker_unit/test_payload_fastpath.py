"""The per-task fast schema check (fastjsonschema) must agree with jsonschema, which lists the errors."""

from __future__ import annotations

from typing import Any

import pytest

from tcworker import payload as payload_mod

GENERIC: list[Any] = [
    {"command": [["true"]], "maxRunTime": 10},
    {"command": [["true"]], "maxRunTime": 10, "env": {"A": "b"}, "features": {"liveLog": False}},
    {"command": [["true"]], "maxRunTime": "10"},
    {"command": [["true"]]},
    {"command": "true", "maxRunTime": 10},
    {"command": [["true"]], "maxRunTime": 10, "unknown": 1},
    {"command": [["true"]], "maxRunTime": 10, "artifacts": [{"type": "file", "path": "a", "expires": "nope"}]},
    {
        "command": [["true"]],
        "maxRunTime": 10,
        "artifacts": [{"type": "file", "path": "a", "expires": "2030-01-01T00:00:00.000Z"}],
    },
    {"command": [["true"]], "maxRunTime": 10, "mounts": [{"content": {"url": "no-scheme"}, "file": "x"}]},
    {"command": [["true"]], "maxRunTime": 10, "mounts": [{"content": {"url": "https://e.x/a"}, "file": "x"}]},
    {"command": [["true"]], "maxRunTime": -1},
    [],
    None,
]
DOCKER: list[Any] = [
    {"image": "busybox", "command": ["true"], "maxRunTime": 10},
    {"image": {"type": "indexed-image", "namespace": "a", "path": "b"}, "maxRunTime": 10},
    {"image": 3, "maxRunTime": 10},
    {"image": "busybox"},
    {"image": "busybox", "maxRunTime": 10, "capabilities": {"privileged": "yes"}},
]


@pytest.mark.parametrize(
    ("kind", "engine", "payload"),
    [("generic", "simple", p) for p in GENERIC]
    + [("generic", "multiuser", p) for p in GENERIC]
    + [("docker", "docker", p) for p in DOCKER],
)
def test_fast_check_agrees_with_jsonschema(kind: str, engine: str, payload: Any) -> None:
    errors = payload_mod.validation_errors(payload, payload_mod.validator_for(kind, engine))
    assert payload_mod.is_valid(payload, kind, engine) == (not errors), errors


def test_fast_check_does_not_fill_defaults() -> None:
    payload = {"command": [["true"]], "maxRunTime": 10}
    assert payload_mod.is_valid(payload, "generic", "simple")
    assert payload == {"command": [["true"]], "maxRunTime": 10}
