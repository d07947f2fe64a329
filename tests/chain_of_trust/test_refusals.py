"""Where chain-of-trust features are refused, and why (issue 11): the simple engine cannot keep
the signing keys from the task, so both features are malformed-payload naming the reason; a
docker-engine pool without an OpenPGP key refuses generateCertificate; an unusable ed25519 key
stops a docker-engine worker at start-up with generic-worker's exit code 82."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.cotchecks import COT, run_task
from helpers.cotpools import Pool, start_pool
from helpers.platformproc import PlatformProcess
from helpers.workerproc import WorkerProcess, clean_env, worker_config

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def simple_pool(host_root: Path, shared_platform: PlatformProcess):
    pool = start_pool(host_root, shared_platform, "simple", engine="simple")
    try:
        yield pool
    finally:
        pool.worker.stop()


@pytest.mark.parametrize("feature", ["chainOfTrust", "generateCertificate"])
def test_simple_engine_refuses_signing_features_saying_why(simple_pool: Pool, feature: str) -> None:
    sub = simple_pool.submitter
    payload = {"command": [["true"]], "maxRunTime": 30, "features": {feature: True}}
    task_id, run = run_task(sub, simple_pool.worker, payload)
    log = sub.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert f"features.{feature} is not available on the simple engine" in log
    assert "can read the worker's signing key" in log
    assert COT not in sub.artifacts(task_id, 0)


@pytest.mark.docker
def test_generate_certificate_without_an_openpgp_key_is_malformed_payload(docker_pool: Pool) -> None:
    sub = docker_pool.submitter
    payload = {"command": [["true"]], "maxRunTime": 30, "features": {"generateCertificate": True}}
    task_id, run = run_task(sub, docker_pool.worker, payload)
    log = sub.log(task_id)
    assert (run["state"], run.get("reasonResolved")) == ("exception", "malformed-payload"), log
    assert "openpgpSigningKeyLocation is empty" in log


@pytest.mark.docker
def test_docker_worker_with_an_unusable_signing_key_exits_82(
    docker_pool: Pool, host_root: Path, shared_platform: PlatformProcess
) -> None:
    workdir = host_root / "bad-key"
    workdir.mkdir()
    key = workdir / "ed25519.key"
    key.write_text("not a key")
    config = worker_config(
        shared_platform.root_url,
        shared_platform.root_access_token,
        workdir,
        key,
        engine="docker",
        workerType="cot-bad-key",
        dockerImage=docker_pool.worker.config["dockerImage"],
    )
    worker = WorkerProcess(workdir, config, clean_env()).start()
    try:
        assert worker.wait(60) == 82, worker.tail()
        assert "ed25519 signing key" in worker.output()
    finally:
        worker.stop()
