"""What both signing features (``chainOfTrust``, ``generateCertificate``) check and report alike:
why the simple engine cannot serve them, the key-exposure check of spec/worker.md §4.4, and the
worker facts their documents carry. A helper module, like ``artifact_rules``, so features do not
import each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcworker.errors import MalformedPayload
from tcworker.features.base import RunHandle, payload_feature_flag
from tcworker.provenance import certificate

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


def simple_engine_reason(feature: str) -> str:
    return (
        f"features.{feature} is not available on the simple engine: its commands run as the "
        "worker's own user, who can read the worker's signing key, so a task could forge the "
        "signature. Use a pool with the multiuser or docker engine, or remove the feature."
    )


def worker_facts(config: WorkerConfig) -> certificate.WorkerFacts:
    return certificate.WorkerFacts(
        worker_group=str(config.workerGroup),
        worker_id=str(config.workerId),
        public_ip=str(config.publicIP),
        private_ip=str(config.privateIP),
        instance_id=str(config.instanceId),
        instance_type=str(config.instanceType),
        region=str(config.region),
    )


async def refuse_readable_key(run: RunHandle, location: str, feature: str) -> None:
    """malformed-payload when the commands' user can read ``location`` (spec §4.4)."""
    if await run.sandbox.task_user_can_read(location):
        message = (
            f"features.{feature}: the task's commands can read the worker's signing key "
            f"({location}), so the task could forge signatures; refusing to run it"
        )
        if payload_feature_flag(run.payload, "runTaskAsCurrentUser"):
            message += (
                " (features.runTaskAsCurrentUser runs the commands as the worker's own user: "
                f"it cannot be combined with features.{feature})"
            )
        run.log.error(message)
        raise MalformedPayload(message)
