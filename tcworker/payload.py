"""Payload validation and translation to the worker's common run model.

A payload with a top-level ``image`` is a docker-worker payload, anything else a generic-worker
payload (the test generic-worker applies before D2G). Each is validated against the shipped
schema; violations are reported one line each in generic-worker's (gojsonschema's) wording, e.g.
``onExitStatus.retry.0: Must be greater than or equal to 1`` (GW ``TestIntermittentNegativeExitCode``).
The valid payload is then turned into ``RunModel``: the commands, env, limits, artifacts and log
names that ``TaskRun`` needs, whatever the payload dialect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft6Validator, FormatChecker, ValidationError

from tcworker import jsonformats, schemas

DEFAULT_LIVE_LOG = "public/logs/live.log"
DEFAULT_BACKING_LOG = "public/logs/live_backing.log"


def payload_kind(payload: Mapping[str, Any]) -> str:
    return "docker" if "image" in payload else "generic"


def _format_checker() -> FormatChecker:
    """date-time and uri checked as upstream does, without jsonschema's optional extras."""
    return jsonformats.format_checker()


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return "integer"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _field(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(root)"


def format_error(error: ValidationError) -> list[str]:
    """One or more ``<field>: <description>`` lines for one violation (gojsonschema wording)."""
    where = _field(error.absolute_path)
    v = error.validator_value
    inst = error.instance
    match error.validator:
        case "required":
            missing = [p for p in v if isinstance(inst, dict) and p not in inst]
            return [f"{where}: {p} is required" for p in missing] or [f"{where}: {error.message}"]
        case "additionalProperties":
            props = error.schema.get("properties", {})
            extras = sorted(k for k in inst if k not in props) if isinstance(inst, dict) else []
            return [f"{where}: Additional property {k} is not allowed" for k in extras] or [
                f"{where}: {error.message}"
            ]
        case "type":
            expected = v if isinstance(v, str) else "/".join(v)
            return [f"{where}: Invalid type. Expected: {expected}, given: {_json_type(inst)}"]
        case "minimum":
            return [f"{where}: Must be greater than or equal to {_num(v)}"]
        case "maximum":
            return [f"{where}: Must be less than or equal to {_num(v)}"]
        case "exclusiveMinimum":
            return [f"{where}: Must be greater than {_num(v)}"]
        case "exclusiveMaximum":
            return [f"{where}: Must be less than {_num(v)}"]
        case "multipleOf":
            return [f"{where}: Must be a multiple of {_num(v)}"]
        case "minItems":
            return [f"{where}: Array must have at least {v} items"]
        case "maxItems":
            return [f"{where}: Array must have at most {v} items"]
        case "uniqueItems":
            dup = _first_duplicate(inst)
            return [f"{where}: array items[{dup[0]},{dup[1]}] must be unique"]
        case "enum":
            options = ", ".join(json.dumps(o) for o in v)
            return [f"{where}: {where} must be one of the following: {options}"]
        case "const":
            return [f"{where}: {where} does not match: {json.dumps(v)}"]
        case "format":
            return [f"{where}: Does not match format '{v}'"]
        case "pattern":
            return [f"{where}: Does not match pattern '{v}'"]
        case "minLength":
            return [f"{where}: String length must be greater than or equal to {v}"]
        case "maxLength":
            return [f"{where}: String length must be less than or equal to {v}"]
        case "minProperties":
            return [f"{where}: Must have at least {v} properties"]
        case "oneOf" | "anyOf":
            word = (
                "one and only one schema (oneOf)"
                if error.validator == "oneOf"
                else "at least one schema (anyOf)"
            )
            lines = [f"{where}: Must validate {word}"]
            if error.context:
                best = min(error.context, key=lambda e: (len(e.absolute_path) * -1, str(e.message)))
                lines.extend(format_error(best))
            return lines
        case _:
            return [f"{where}: {error.message}"]


def _first_duplicate(items: Any) -> tuple[int, int]:
    if isinstance(items, list):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            key = json.dumps(item, sort_keys=True)
            if key in seen:
                return (seen[key], i)
            seen[key] = i
    return (0, 1)


def validation_errors(payload: Any, schema: Mapping[str, Any] | Draft6Validator) -> list[str]:
    """Every violation of ``schema`` (a schema or a ready validator) as gojsonschema-style lines."""
    validator = (
        schema
        if isinstance(schema, Draft6Validator)
        else Draft6Validator(schema, format_checker=_format_checker())
    )
    errors = sorted(
        validator.iter_errors(payload), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    lines: list[str] = []
    for error in errors:
        for line in format_error(error):
            if line not in lines:
                lines.append(line)
    return lines


def env_problems(payload: Any) -> list[str]:
    """Env entries no process can receive, one line per variable: a name that is empty or holds
    ``=`` or NUL, a value that holds NUL (``execve`` would refuse them, so the task could only
    fail later; they are the payload's fault). The schema cannot say this for both dialects."""
    env = payload.get("env") if isinstance(payload, Mapping) else None
    if not isinstance(env, Mapping):
        return []
    problems: list[str] = []
    for name, value in env.items():
        shown = json.dumps(name)
        if name == "":
            problems.append("env: an environment variable name must not be empty")
        elif "=" in name:
            problems.append(f"env.{shown}: environment variable name {shown} must not contain '='")
        elif "\0" in name:
            problems.append(
                f"env.{shown}: environment variable name {shown} must not contain a NUL character"
            )
        if isinstance(value, str) and "\0" in value:
            problems.append(
                f"env.{shown}: the value of environment variable {shown} must not contain a NUL character"
            )
    return problems


@cache
def _fast_validator(kind: str, engine: str) -> Callable[[Any], Any]:
    return fastjsonschema.compile(
        schema_for(kind, engine),
        formats={"date-time": jsonformats.is_datetime, "uri": jsonformats.is_uri},
        use_default=False,  # judge the payload, never fill defaults into it
    )


def is_valid(payload: Any, kind: str, engine: str) -> bool:
    """``True`` when ``payload`` certainly conforms (generated code, ~20x jsonschema's speed:
    validation is per task). ``False`` = invalid, or a case the generated code cannot judge:
    then ``validation_errors`` (jsonschema) decides and lists every violation."""
    try:
        _fast_validator(kind, engine)(payload)
    except Exception:
        return False
    return True


@cache
def validator_for(kind: str, engine: str) -> Draft6Validator:
    """A compiled validator per payload kind and engine (built once: validation is per task)."""
    return Draft6Validator(schema_for(kind, engine), format_checker=_format_checker())


def schema_for(kind: str, engine: str) -> dict[str, Any]:
    if kind == "docker":
        return schemas.docker_payload_schema()
    return schemas.generic_payload_schema(engine)


@dataclass(frozen=True)
class ArtifactSpec:
    """One artifact the payload asks for, in the worker's common shape."""

    type: str  # "file" | "directory" (| "volume" for docker payloads)
    path: str
    name: str
    expires: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class RunModel:
    """What TaskRun needs from a payload, whichever dialect it was written in."""

    kind: str
    commands: list[list[str]]
    env: dict[str, str]
    max_run_time: int
    retry_codes: frozenset[int] = frozenset()
    purge_caches_codes: frozenset[int] = frozenset()
    artifacts: list[ArtifactSpec] = field(default_factory=list)
    live_log_name: str = DEFAULT_LIVE_LOG
    backing_log_name: str = DEFAULT_BACKING_LOG
    backing_log_enabled: bool = True
    live_log_enabled: bool = True


def backing_name_for(live: str) -> str:
    """docker-worker's rule: ``_backing`` before the last extension (``a/b.log.txt`` → ``a/b.log_backing.txt``)."""
    head, slash, last = live.rpartition("/")
    stem, dot, ext = last.rpartition(".")
    if not dot or not stem:
        return f"{live}_backing"
    return f"{head}{slash}{stem}_backing.{ext}"


def to_run_model(payload: Mapping[str, Any]) -> RunModel:
    """Translate a payload that already passed its schema."""
    kind = payload_kind(payload)
    on_exit = payload.get("onExitStatus") or {}
    retry = frozenset(int(c) for c in on_exit.get("retry", []))
    purge = frozenset(int(c) for c in on_exit.get("purgeCaches", []))
    env = {str(k): str(v) for k, v in (payload.get("env") or {}).items()}
    max_run_time = int(payload["maxRunTime"])
    if kind == "docker":
        command = [str(a) for a in payload.get("command") or []]
        features = payload.get("features") or {}
        live = payload.get("log") or DEFAULT_LIVE_LOG
        artifacts_on = features.get("artifacts", True)
        artifacts = [
            ArtifactSpec(
                type=spec["type"],
                path=spec["path"],
                name=name,
                expires=spec.get("expires"),
                optional=True,  # docker-worker: a missing artifact does not fail the task
            )
            for name, spec in sorted((payload.get("artifacts") or {}).items())
        ]
        return RunModel(
            kind=kind,
            commands=[command],
            env=env,
            max_run_time=max_run_time,
            retry_codes=retry,
            purge_caches_codes=purge,
            artifacts=artifacts if artifacts_on else [],
            live_log_name=live,
            backing_log_name=backing_name_for(live),
            backing_log_enabled=bool(artifacts_on),
            live_log_enabled=bool(artifacts_on) and bool(features.get("localLiveLog", True)),
        )
    features = payload.get("features") or {}
    logs = payload.get("logs") or {}
    artifacts = [
        ArtifactSpec(
            type=a["type"],
            path=a["path"],
            name=a.get("name") or a["path"],
            expires=a.get("expires"),
            content_type=a.get("contentType"),
            content_encoding=a.get("contentEncoding"),
            optional=bool(a.get("optional", False)),
        )
        for a in payload.get("artifacts") or []
    ]
    return RunModel(
        kind=kind,
        commands=[[str(a) for a in c] for c in payload["command"]],
        env=env,
        max_run_time=max_run_time,
        retry_codes=retry,
        purge_caches_codes=purge,
        artifacts=artifacts,
        live_log_name=logs.get("live", DEFAULT_LIVE_LOG),
        backing_log_name=logs.get("backing", DEFAULT_BACKING_LOG),
        backing_log_enabled=bool(features.get("backingLog", True)),
        live_log_enabled=bool(features.get("liveLog", True)),
    )
