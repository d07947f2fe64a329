"""``features.chainOfTrust``: sign what the run produced (spec/worker.md §4, generic-worker and
docker-worker payloads; multiuser and docker engines).

At ``start`` the worker's ed25519 key must be out of the task's reach: on multiuser the worker
runs ``/bin/cat <key>`` as the commands' user and refuses the task (malformed-payload) when that
succeeds — which is what makes ``runTaskAsCurrentUser`` + ``chainOfTrust`` fail, as in
generic-worker. On the simple engine the commands run as the worker's own user, so the pool gate
refuses the feature with that reason. At ``stop`` — placed before ``dockerSave`` and ``artifacts``
in ``FEATURES``, so it stops after every payload and engine artifact is uploaded — it publishes
``public/logs/certified.log`` (a copy of the log so far), ``public/chain-of-trust.json`` (every
object artifact uploaded
so far with the sha256 of its plain bytes, the task, the worker, the environment; for generic
payloads merged with the task's ``chain-of-trust-additional-data.json``, worker values winning)
and ``public/chain-of-trust.json.sig`` (the raw 64-byte ed25519 signature of exactly those
bytes), and, unless ``enableProvenance`` is false, ``public/provenance.intoto.jsonl`` (signed SLSA
provenance, ``tcworker.provenance.slsa``). Every hash is known before these uploads start (the
log copy is hashed while it is made), so the four uploads run side by side. A cancelled run is
not certified (docker-worker's rule).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tcworker import __version__, tctime
from tcworker.engines.base import ArtifactMissing, ArtifactProblem, CancelReason
from tcworker.errors import ConfigError, InternalError, TaskFailed
from tcworker.exitcodes import ExitCode
from tcworker.features.base import Feature, RunHandle, RunOutcome, TaskFeature, payload_feature_flag
from tcworker.features.signing import refuse_readable_key, simple_engine_reason, worker_facts
from tcworker.provenance import certificate, certified_log, slsa
from tcworker.provenance.keys import UnusableKey, load_signing_key, public_key_b64
from tcworker.provenance.publishing import publish_bytes

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tcworker.config import WorkerConfig
    from tcworker.tcapi.clients import Clients

CHAIN_OF_TRUST = "public/chain-of-trust.json"
SIGNATURE = "public/chain-of-trust.json.sig"
PROVENANCE = "public/provenance.intoto.jsonl"
ADDITIONAL_DATA = "chain-of-trust-additional-data.json"
ADDITIONAL_DATA_MAX = 4 << 20  # bytes: the file is merged into a signed document, not a bulk store
PROVENANCE_CONTENT_TYPE = "application/vnd.in-toto+json"


class ChainOfTrustFeature(Feature):
    name = "chainOfTrust"
    config_gate = "enableChainOfTrust"

    def __init__(self) -> None:
        self._key: Ed25519PrivateKey | None = None

    def enabled(self, config: WorkerConfig) -> bool:
        return bool(config.enableChainOfTrust) and config.engine != "simple"

    def disabled_reason(self, config: WorkerConfig) -> str | None:
        return simple_engine_reason(self.name) if config.engine == "simple" else None

    async def initialise(self, config: WorkerConfig, clients: Clients) -> None:
        """Read the signing key once (generic-worker reads it at start-up: exit 82 when unusable)."""
        if not self.enabled(config):
            return
        try:
            self._key = await asyncio.to_thread(load_signing_key, config.ed25519SigningKeyLocation)
        except UnusableKey as e:
            raise ConfigError(str(e), ExitCode.MISSING_ED25519_PRIVATE_KEY) from e

    def for_run(self, run: RunHandle) -> TaskFeature | None:
        if not payload_feature_flag(run.payload, "chainOfTrust"):
            return None
        return ChainOfTrustTaskFeature(run, self._key)


class ChainOfTrustTaskFeature(TaskFeature):
    def __init__(self, run: RunHandle, key: Ed25519PrivateKey | None) -> None:
        self.run = run
        self.key = key
        self.started_on = ""
        self.docker_payload = run.payload_kind == "docker"

    def reserved_artifacts(self) -> Sequence[str]:
        names = [CHAIN_OF_TRUST, SIGNATURE, certified_log.CERTIFIED_LOG]
        if self.run.config.enableProvenance:
            names.append(PROVENANCE)
        return names

    async def start(self) -> None:
        location = str(self.run.config.ed25519SigningKeyLocation)
        if self.key is None:
            try:
                self.key = await asyncio.to_thread(load_signing_key, location)
            except UnusableKey as e:
                raise InternalError(f"chain of trust: {e}") from e
        await refuse_readable_key(self.run, location, "chainOfTrust")
        self.started_on = tctime.to_json(tctime.now())

    async def stop(self, outcome: RunOutcome) -> None:
        if not self.started_on or self.key is None:
            return
        run = self.run
        if outcome.abort_reason is CancelReason.CANCELLED:
            run.log.warn("[chainOfTrust] the run was cancelled: no chain-of-trust artifacts")
            return
        expires = str(run.task["expires"])
        log_copy, log_sha256 = await certified_log.snapshot(run.log_path, run.scratch_dir)
        own = {CHAIN_OF_TRUST, SIGNATURE, PROVENANCE}
        hashes = {name: h for name, h in run.publisher.uploaded_sha256.items() if name not in own}
        hashes[certified_log.CERTIFIED_LOG] = log_sha256
        facts = worker_facts(run.config)
        image = self._image_facts()
        doc = certificate.build(
            artifacts=hashes,
            task=run.task,
            task_id=run.task_id,
            run_id=run.run_id,
            facts=facts,
            env=certificate.environment(facts, self.docker_payload, image),
        )
        if not self.docker_payload:
            additional = await self._additional_data()
            if additional:
                doc = certificate.merge_additional(additional, doc)
        body = certificate.serialise(doc)
        signature = self.key.sign(body)
        # generic-worker gzips all three; docker-worker uploaded the document and signature as is.
        encoding = "identity" if self.docker_payload else "gzip"
        json_type = "text/plain" if self.docker_payload else "text/plain; charset=utf-8"
        uploads = [
            certified_log.upload(run.publisher, log_copy, expires, self.docker_payload),
            publish_bytes(run.publisher, run.scratch_dir, CHAIN_OF_TRUST, body, json_type, expires, encoding),
            publish_bytes(
                run.publisher,
                run.scratch_dir,
                SIGNATURE,
                signature,
                "application/octet-stream",
                expires,
                encoding,
            ),
        ]
        if run.config.enableProvenance:
            subjects = {**hashes, CHAIN_OF_TRUST: sha256_hex(body), SIGNATURE: sha256_hex(signature)}
            bundle = self._provenance(subjects, image)
            uploads.append(run.publisher.upload_bytes(PROVENANCE, bundle, PROVENANCE_CONTENT_TYPE, expires))
        # All documents are signed over locally computed hashes: upload them side by side.
        results = await asyncio.gather(*uploads, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        run.log.info(
            f"[chainOfTrust] Signed {CHAIN_OF_TRUST} ({len(hashes)} artifact hashes) with ed25519 key "
            f"{public_key_b64(self.key)}"
        )
        if run.config.enableProvenance:
            run.log.info(
                f"[chainOfTrust] Signed SLSA provenance for {len(hashes) + 2} artifacts: {PROVENANCE}"
            )

    def _image_facts(self) -> Mapping[str, str] | None:
        return self.run.sandbox.image_facts() or None

    async def _additional_data(self) -> dict[str, Any] | None:
        """The task's additional data, read with the task's own rights (a symlink to a file the
        task cannot read is refused like an artifact would be)."""
        run = self.run
        # Nothing there (not even a dangling symlink): no helper process needs to look.
        if not await asyncio.to_thread(os.path.lexists, run.sandbox.task_dir / ADDITIONAL_DATA):
            return None
        staging = run.scratch_dir / "cot-additional"
        await asyncio.to_thread(staging.mkdir, mode=0o700, parents=True, exist_ok=True)
        try:
            files = await run.sandbox.collect_artifact(ADDITIONAL_DATA, "file", staging)
        except ArtifactMissing:
            return None
        except ArtifactProblem as e:
            raise TaskFailed(f"chain of trust: cannot read {ADDITIONAL_DATA}: {e.message}") from e
        if not files:
            return None
        path = files[0].path
        if files[0].size > ADDITIONAL_DATA_MAX:
            raise TaskFailed(f"chain of trust: {ADDITIONAL_DATA} is larger than {ADDITIONAL_DATA_MAX} bytes")
        try:
            data = json.loads(await asyncio.to_thread(path.read_bytes))
        except (OSError, ValueError) as e:
            raise TaskFailed(f"chain of trust: {ADDITIONAL_DATA} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise TaskFailed(f"chain of trust: {ADDITIONAL_DATA} must hold a JSON object")
        run.log.info(f"[chainOfTrust] Merging {ADDITIONAL_DATA} into the certificate (worker values win)")
        return data

    def _provenance(self, subjects: Mapping[str, str], image: Mapping[str, str] | None) -> bytes:
        """The signed SLSA statement (one DSSE envelope, one line)."""
        run = self.run
        assert self.key is not None
        doc = slsa.statement(
            subjects=subjects,
            task=certificate.task_definition(run.task),
            task_id=run.task_id,
            run_id=run.run_id,
            root_url=run.root_url,
            task_queue_id=run.task_queue_id,
            worker={
                "workerGroup": run.config.workerGroup,
                "workerId": run.config.workerId,
                "engine": run.engine_name,
                "implementation": f"tcworker {__version__}",
            },
            docker_payload=self.docker_payload,
            dependencies=[
                *slsa.image_dependencies(
                    image,
                    run.payload.get("image") if self.docker_payload else run.config.dockerImage,
                    run.root_url,
                ),
                *run.resolved_inputs,
            ],
            started_on=self.started_on,
            finished_on=tctime.to_json(tctime.now()),
        )
        return slsa.jsonl(slsa.envelope(doc, self.key))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
