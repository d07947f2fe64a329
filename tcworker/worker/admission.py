"""Admission of one run: is this payload runnable here, and may this task use what it asks for?

Before anything touches the host, ``TaskRun`` checks (spec/worker.md §1.8, §1.10): the payload
kind against the engine (docker-worker payloads need the docker engine), the shipped schema
(every violation logged in generic-worker's words) and env names/values no process can receive, ``maxRunTime`` against ``maxTaskRunTime``,
payload toggles no loaded feature serves, each requested feature's pool gate, the scopes the
features require (``task.scopes``, expanded through the auth service only when needed) and
reserved artifact names. Every refusal is ``MalformedPayload`` (``ResourceUnavailable`` when the
auth service cannot expand scopes).
"""

from __future__ import annotations

import json

from tcworker import __version__, scopes
from tcworker import payload as payload_mod
from tcworker.engines.base import Engine
from tcworker.errors import MalformedPayload
from tcworker.features import unimplemented_requests
from tcworker.features.base import Feature, RunHandle, TaskFeature


def validate(run: RunHandle, engine: Engine, features: list[Feature]) -> payload_mod.RunModel:
    """Payload kind vs engine, schema (violations logged GW-style), maxRunTime limit, unserved toggles."""
    kinds = engine.supported_payload_kinds()
    if run.payload_kind not in kinds:
        if run.payload_kind == "docker":
            raise MalformedPayload(
                "This is a docker-worker payload (it has a top-level `image`), but worker pool "
                f"{run.config.task_queue_id} runs the {run.engine_name} engine, which only runs "
                "generic-worker payloads. Submit it to a pool with the docker engine."
            )
        raise MalformedPayload(
            f"worker pool {run.config.task_queue_id} runs the {run.engine_name} engine, which only "
            "runs docker-worker payloads (with a top-level `image`)"
        )
    if run.payload_kind == "generic" and run.config.disableNativePayloads:
        raise MalformedPayload(
            f"worker pool {run.config.task_queue_id} does not accept generic-worker payloads "
            "(disableNativePayloads); only docker-worker payloads run here"
        )
    raw = run.task.get("payload")
    problems = payload_mod.env_problems(raw)
    if not payload_mod.is_valid(raw, run.payload_kind, run.engine_name):
        problems = (
            payload_mod.validation_errors(raw, payload_mod.validator_for(run.payload_kind, run.engine_name))
            + problems
        )
    if problems:
        schema = payload_mod.validator_for(run.payload_kind, run.engine_name).schema
        run.log.error("Task payload for this worker type must conform to the following jsonschema:")
        run.log.error(json.dumps(schema, indent=2))
        run.log.error("TASK FAIL since the task payload is invalid. See errors:")
        for p in problems:
            run.log.error(f"- {p}")
        raise MalformedPayload(f"Validation of payload failed for task {run.task_id}")
    model = payload_mod.to_run_model(run.payload)
    if model.max_run_time > run.config.maxTaskRunTime:
        raise MalformedPayload(
            f"task's maxRunTime of {model.max_run_time} exceeded allowed maximum of {run.config.maxTaskRunTime}"
        )
    if run.payload_kind == "generic":
        missing = unimplemented_requests(run.payload, features)
        if missing:
            raise MalformedPayload(
                f"This task requests {', '.join(missing)}, which tcworker {__version__} does not "
                "implement yet. Remove "
                f"{'it' if len(missing) == 1 else 'them'} from the payload."
            )
    return model


async def gate_features(run: RunHandle, features: list[Feature]) -> list[TaskFeature]:
    """Pool gates, scopes, reserved names and admission checks of every requested feature,
    before the engine prepares anything."""
    requested: list[tuple[Feature, TaskFeature]] = []
    for feature in features:
        tf = feature.for_run(run)
        if tf is None:
            continue
        if not feature.enabled(run.config):
            reason = feature.disabled_reason(run.config)
            raise MalformedPayload(
                reason
                or (
                    f"This task requests the {feature.name} feature, which is not enabled on worker "
                    f"pool {run.config.task_queue_id} ({run.root_url}/worker-manager/"
                    f"{run.config.task_queue_id}). Either remove it from the payload, or submit the "
                    "task to a pool that enables it."
                )
            )
        requested.append((feature, tf))
    required = [expr for _, tf in requested for expr in tf.required_scopes()]
    if required:
        try:
            await scopes.check_task_scopes(run.task.get("scopes", []), required, run.expand_scopes)
        except MalformedPayload as e:
            run.log.error(str(e))
            raise
    for feature, tf in requested:
        for name in tf.reserved_artifacts():
            if name in run.reserved_artifacts and run.reserved_artifacts[name] != feature.name:
                raise MalformedPayload(
                    f"artifact {name!r} is reserved by both {run.reserved_artifacts[name]} and {feature.name}"
                )
            run.reserved_artifacts[name] = feature.name
    for _, tf in requested:
        await tf.admit()
    return [tf for _, tf in requested]
