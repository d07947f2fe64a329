"""Issue 9 acceptance 3: secrets printed by a task never reach the backing log or the live log.

1. The task's own temporary access token, printed raw, base64 and URL-encoded, and the worker's
   access token printed in base64 (simple engine). The token exists only in the queue's answer to
   the worker, so the worker talks to the platform through a recording proxy and the test hands
   the token to the waiting task through a file.
2. An `encryptedEnv` value (real gpg message to the worker's key), printed raw and in base64, on
   the docker engine.
Both logs are read for real: the live log while the task runs, the backing log afterwards.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import taskcluster
from helpers.polling import wait_for
from helpers.submitter import Submitter
from livehelpers import LiveReader, live_url_of
from recording_proxy import RecordingProxy


def _live_reader(submitter: Submitter, task_id: str) -> LiveReader:
    def reference() -> bool:
        try:
            return (
                submitter.queue.artifact(task_id, "0", "public/logs/live.log")["storageType"] == "reference"
            )
        except taskcluster.TaskclusterRestFailure:
            return False

    wait_for(reference, 90, "the live.log reference")
    reader = LiveReader(live_url_of(taskcluster.Queue({"rootUrl": submitter.root_url}), task_id))
    reader.start()
    return reader


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), quote(secret, safe="").encode()]


def test_task_and_worker_tokens_are_masked(
    submitter: Submitter, start_worker: Any, shared_platform: Any, tmp_path: Path
) -> None:
    proxy = RecordingProxy(shared_platform.root_url).start()
    try:
        worker = start_worker(rootURL=proxy.url)
        handoff = tmp_path / "handoff"
        handoff.mkdir()
        script = (
            'while [ ! -s "$HANDOFF/token" ]; do sleep 0.1; done; T=$(cat "$HANDOFF/token"); '
            'echo "raw: $T"; printf %s "$T" | base64 -w0; echo; printf %s "$T" | basenc --base64url -w0; echo; '
            'printf %s "$WORKER_TOKEN" | base64 -w0; echo; echo "in a blob: $(printf "xy%s!" "$T" | base64 -w0)"; '
            "echo done"
        )
        task_id = submitter.create(
            {
                "command": [["sh", "-c", script]],
                "env": {"HANDOFF": str(handoff), "WORKER_TOKEN": submitter.root_token},
                "maxRunTime": 120,
            }
        )
        credentials = wait_for(lambda: proxy.credentials_of(task_id), 90, "the claim of the task")
        token = credentials["accessToken"]
        reader = _live_reader(submitter, task_id)
        (handoff / "token").write_text(token)
        reader.join(120)
        run = submitter.wait_run(task_id, worker=worker)
        assert run["state"] == "completed", submitter.explain(task_id)
    finally:
        proxy.stop()
    backing, _ = submitter.download(task_id, 0, "public/logs/live_backing.log")
    assert reader.ended and reader.data == backing
    assert b"done" in backing and backing.count(b"[secret]") >= 5, backing.decode()
    blob = base64.b64encode(b"xy" + token.encode() + b"!")
    for secret in (token, submitter.root_token):
        for form in _forms(secret):
            assert form not in backing, f"{form!r} reached the backing log"
    assert blob not in backing


@pytest.mark.docker
def test_encrypted_env_value_is_masked_in_both_logs(
    submitter: Submitter, start_worker: Any, docker_image: str, gpg_key: Any
) -> None:
    import time

    import slugid

    value = "correct-horse-battery-staple-" + slugid.nice()[:8]
    worker = start_worker(
        engine="docker", dockerImage=docker_image, openpgpPrivateKeyLocation=str(gpg_key.secret_key_file)
    )
    task_id = slugid.nice()
    now_ms = int(time.time() * 1000)
    message = gpg_key.message(
        {
            "messageVersion": 1,
            "taskId": task_id,
            "startTime": now_ms - 60_000,
            "endTime": now_ms + 3_600_000,
            "name": "SECRET",
            "value": value,
        }
    )
    script = 'sleep 1; echo "raw $SECRET"; printf %s "$SECRET" | base64; sleep 1; echo done'
    task = submitter.task_definition(
        {
            "image": docker_image,
            "command": ["sh", "-c", script],
            "maxRunTime": 120,
            "encryptedEnv": [message],
        },
        mark=False,
    )
    submitter.queue.createTask(task_id, task)
    reader = _live_reader(submitter, task_id)
    reader.join(120)
    run = submitter.wait_run(task_id, worker=worker, timeout=120)
    assert run["state"] == "completed", submitter.explain(task_id)
    backing, _ = submitter.download(task_id, 0, "public/logs/live_backing.log")
    assert reader.ended and reader.data == backing
    assert b"done" in backing and backing.count(b"[secret]") >= 2, backing.decode()
    for form in _forms(value):
        assert form not in backing and form not in reader.data, f"{form!r} reached a log"
