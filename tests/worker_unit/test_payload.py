"""Payload validation in generic-worker's wording, and translation to the run model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcworker import payload as p

UPSTREAM = Path("/work/shared/upstream/worker-schemas")


def errors(payload: object, kind: str = "generic", engine: str = "simple") -> list[str]:
    return p.validation_errors(payload, p.schema_for(kind, engine))


def test_negative_retry_code_message_matches_generic_worker() -> None:
    out = errors({"command": [["true"]], "maxRunTime": 5, "onExitStatus": {"retry": [-1]}})
    assert out == ["onExitStatus.retry.0: Must be greater than or equal to 1"]


def test_empty_payload_names_both_required_properties() -> None:
    assert errors({}) == ["(root): command is required", "(root): maxRunTime is required"]


def test_extra_fields_are_not_allowed() -> None:
    assert errors({"command": [["true"]], "maxRunTime": 5, "foo": 1}) == [
        "(root): Additional property foo is not allowed"
    ]


def test_identical_artifacts_violate_unique_items() -> None:
    art = {"type": "file", "path": "a"}
    out = errors({"command": [["true"]], "maxRunTime": 5, "artifacts": [art, art]})
    assert out == ["artifacts: array items[0,1] must be unique"]


def test_every_violation_gets_a_line() -> None:
    out = errors({"command": [], "maxRunTime": "5", "env": {"A": 1}})
    assert "command: Array must have at least 1 items" in out
    assert "maxRunTime: Invalid type. Expected: integer, given: string" in out
    assert "env.A: Invalid type. Expected: string, given: integer" in out


def test_dates_are_checked() -> None:
    out = errors(
        {"command": [["x"]], "maxRunTime": 1, "artifacts": [{"type": "file", "path": "a", "expires": "soon"}]}
    )
    assert out == ["artifacts.0.expires: Does not match format 'date-time'"]


@pytest.mark.parametrize(
    "payload",
    [
        {"command": [["true"]], "maxRunTime": 1},
        {
            "command": [["a", "b"], ["c"]],
            "maxRunTime": 600,
            "env": {"A": "b"},
            "artifacts": [
                {"type": "directory", "path": "d", "name": "public/d", "expires": "2030-01-01T00:00:00.000Z"},
                {
                    "type": "file",
                    "path": "f.txt",
                    "contentType": "text/x",
                    "contentEncoding": "gzip",
                    "optional": True,
                },
            ],
            "features": {"backingLog": True, "liveLog": False},
            "logs": {"live": "public/l.log", "backing": "public/b.log"},
            "onExitStatus": {"retry": [2], "purgeCaches": [0]},
            "supersederUrl": "https://example.com/s",
        },
    ],
)
def test_shipped_schema_accepts_what_upstream_accepts(payload: dict[str, object]) -> None:
    upstream = json.loads((UPSTREAM / "generic-worker-insecure_posix.json").read_text())
    upstream["$schema"] = "http://json-schema.org/draft-06/schema#"
    assert p.validation_errors(payload, upstream) == []
    assert errors(payload) == []


def test_docker_payload_is_detected_by_image() -> None:
    assert p.payload_kind({"image": "ubuntu", "maxRunTime": 1}) == "docker"
    assert p.payload_kind({"command": [["x"]], "maxRunTime": 1}) == "generic"
    assert errors({"image": "ubuntu:22.04", "maxRunTime": 10, "command": ["ls"]}, kind="docker") == []


def test_generic_run_model() -> None:
    model = p.to_run_model(
        {
            "command": [["a"], ["b", "c"]],
            "maxRunTime": 7,
            "env": {"X": "1"},
            "onExitStatus": {"retry": [3]},
            "artifacts": [{"type": "file", "path": "x/y.txt"}],
            "logs": {"live": "public/l.log"},
        }
    )
    assert model.commands == [["a"], ["b", "c"]]
    assert model.max_run_time == 7
    assert model.retry_codes == frozenset({3})
    assert model.artifacts[0].name == "x/y.txt"
    assert not model.artifacts[0].optional
    assert (model.live_log_name, model.backing_log_name) == ("public/l.log", p.DEFAULT_BACKING_LOG)


def test_docker_run_model_marks_artifacts_optional_and_derives_log_names() -> None:
    model = p.to_run_model(
        {
            "image": "ubuntu",
            "maxRunTime": 10,
            "command": ["echo", "hi"],
            "log": "public/logs/mine.log",
            "artifacts": {
                "public/b": {"type": "file", "path": "/b"},
                "public/a": {"type": "directory", "path": "/a"},
            },
        }
    )
    assert model.commands == [["echo", "hi"]]
    assert [a.name for a in model.artifacts] == ["public/a", "public/b"]
    assert all(a.optional for a in model.artifacts)
    assert model.backing_log_name == "public/logs/mine_backing.log"


def test_docker_payload_without_command_runs_image_default() -> None:
    assert p.to_run_model({"image": "ubuntu", "maxRunTime": 10}).commands == [[]]


@pytest.mark.parametrize(
    "live,backing",
    [
        ("public/logs/live.log", "public/logs/live_backing.log"),
        ("a/b.log.txt", "a/b.log_backing.txt"),
        ("x/live", "x/live_backing"),
    ],
)
def test_docker_backing_log_name(live: str, backing: str) -> None:
    assert p.backing_name_for(live) == backing


@pytest.mark.parametrize("kind", ["generic", "docker"])
def test_env_names_and_values_no_process_can_receive_are_each_named(kind: str) -> None:
    payload: dict[str, object] = {
        "command": [["true"]] if kind == "generic" else ["true"],
        "maxRunTime": 5,
        "env": {"OK": "fine", "A=B": "x", "N\0M": "y", "V": "a\0b", "": "empty"},
    }
    if kind == "docker":
        payload["image"] = "busybox"
    assert errors(payload, kind, "docker" if kind == "docker" else "simple") == []  # the schema allows them
    assert p.env_problems(payload) == [
        'env."A=B": environment variable name "A=B" must not contain \'=\'',
        'env."N\\u0000M": environment variable name "N\\u0000M" must not contain a NUL character',
        'env."V": the value of environment variable "V" must not contain a NUL character',
        "env: an environment variable name must not be empty",
    ]
    assert p.env_problems({"command": [["true"]], "maxRunTime": 5}) == []
