"""``features.generateCertificate`` (generic-worker ≤ 13, seed 003): an OpenPGP-signed certificate.

When it stops — after ``artifacts`` and after ``chainOfTrust`` (see ``FEATURES``) — it publishes
``public/logs/certified.log`` (unless chainOfTrust already did) and
``public/logs/certificate.json.gpg``: a clear-signed OpenPGP message whose JSON lists the sha256
of every object artifact uploaded so far plus the worker's identity
(``tcworker.provenance.openpgp_cert``), signed with the key at config
``openpgpSigningKeyLocation``. As for chainOfTrust, the key must be unreadable by the task
(checked at start on multiuser) and the simple engine refuses the feature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tcworker.engines.base import CancelReason
from tcworker.errors import ConfigError, MalformedPayload
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.features.signing import refuse_readable_key, simple_engine_reason, worker_facts
from tcworker.provenance import certified_log, openpgp_cert
from tcworker.provenance.publishing import publish_bytes

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig
    from tcworker.tcapi.clients import Clients

CERTIFICATE = "public/logs/certificate.json.gpg"


class GenerateCertificateFeature(Feature):
    name = "generateCertificate"

    def __init__(self) -> None:
        self._signer: openpgp_cert.OpenPGPSigner | None = None

    def enabled(self, config: WorkerConfig) -> bool:
        return config.engine != "simple"

    def disabled_reason(self, config: WorkerConfig) -> str | None:
        return simple_engine_reason(self.name) if config.engine == "simple" else None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        if not config.openpgpSigningKeyLocation or not self.enabled(config):
            return
        try:
            self._signer = await asyncio.to_thread(
                openpgp_cert.OpenPGPSigner, config.openpgpSigningKeyLocation
            )
        except openpgp_cert.UnusableOpenPGPKey as e:
            raise ConfigError(str(e)) from e

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not payload_feature_flag(run.payload, "generateCertificate"):
            return None
        return GenerateCertificateTaskFeature(run, self._signer)


class GenerateCertificateTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle, signer: openpgp_cert.OpenPGPSigner | None) -> None:
        self.run = run
        self.signer = signer
        self.started = False

    def reserved_artifacts(self) -> Sequence[str]:
        # With chainOfTrust on, that feature publishes (and reserves) the certified log.
        if payload_feature_flag(self.run.payload, "chainOfTrust"):
            return [CERTIFICATE]
        return [CERTIFICATE, certified_log.CERTIFIED_LOG]

    async def admit(self) -> None:
        if self.signer is None:
            raise MalformedPayload(
                f"features.generateCertificate needs the worker's OpenPGP signing key, but worker pool "
                f"{self.run.task_queue_id} has none (config openpgpSigningKeyLocation is empty). "
                "Remove the feature, or use features.chainOfTrust."
            )

    async def start(self) -> None:
        if self.signer is None:
            return
        await refuse_readable_key(
            self.run, str(self.run.config.openpgpSigningKeyLocation), "generateCertificate"
        )
        self.started = True

    async def stop(self, outcome: RunOutcome) -> None:
        if not self.started or self.signer is None:
            return
        run = self.run
        if outcome.abort_reason is CancelReason.CANCELLED:
            run.log.warn("[generateCertificate] the run was cancelled: no certificate")
            return
        expires = str(run.task["expires"])
        await certified_log.publish(run.publisher, run.log_path, run.scratch_dir, expires, False)
        hashes = {n: h for n, h in run.publisher.uploaded_sha256.items() if n != CERTIFICATE}
        text = openpgp_cert.document(
            artifacts=hashes,
            task=run.task,
            task_id=run.task_id,
            run_id=run.run_id,
            facts=worker_facts(run.config),
        )
        signed = await asyncio.to_thread(self.signer.clearsign, text)
        await publish_bytes(
            run.publisher, run.scratch_dir, CERTIFICATE, signed, "text/plain; charset=utf-8", expires, "gzip"
        )
        run.log.info(
            f"[generateCertificate] Published {CERTIFICATE} ({len(hashes)} artifact hashes), signed by "
            f"OpenPGP key {self.signer.fingerprint}"
        )
