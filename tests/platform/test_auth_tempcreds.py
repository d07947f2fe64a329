"""Acceptance (issue 2, items 1 and 3): temporary credentials and authorizedScopes.

Task credentials from claimWork work for their own run only; `taskcluster.createTemporaryCredentials`
certificates issued by a static client are limited to their scopes, expire, and cannot exceed the
issuer; `authorizedScopes` restricts a request.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import slugid
import taskcluster
from helpers.platformapi import (
    ISSUER,
    LIMITED,
    check_schema,
    check_status,
    claim,
    claim_task,
    create_task,
    rest_error,
    run_queue,
)
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now, new_queue_id, task_def, utcnow


def temp_creds(
    issuer: dict[str, str],
    scopes: list[str],
    *,
    start: dt.datetime | None = None,
    expiry: dt.datetime | None = None,
    name: str | None = None,
) -> dict[str, str]:
    start = start or utcnow() - dt.timedelta(minutes=1)
    expiry = expiry or utcnow() + dt.timedelta(hours=1)
    return taskcluster.createTemporaryCredentials(
        issuer["clientId"], issuer["accessToken"], start, expiry, scopes, name=name
    )


def test_task_credentials_shape(root_queue: taskcluster.Queue, queue_id: str) -> None:
    task_id, _ = create_task(root_queue, queue_id, scopes=["tcw-test:feature:x", "secrets:get:foo"])
    c = claim_task(root_queue, queue_id, task_id, worker_id="w7")
    check_schema(c["credentials"], "task-credentials")
    creds = c["credentials"]
    assert creds["clientId"].startswith(f"task-client/{task_id}/0/on/wg/w7/until/")
    cert = json.loads(creds["certificate"])
    assert cert["version"] == 1 and cert["issuer"] and len(cert["seed"]) == 44
    assert set(cert["scopes"]) >= {
        f"queue:reclaim-task:{task_id}/0",
        f"queue:resolve-task:{task_id}/0",
        f"queue:create-artifact:{task_id}/0",
        "tcw-test:feature:x",
        "secrets:get:foo",
    }
    taken_until = dt.datetime.fromisoformat(c["takenUntil"].replace("Z", "+00:00"))
    assert abs(cert["expiry"] / 1000 - taken_until.timestamp()) < 2


def test_task_credentials_limited_to_own_run(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    mine, _ = create_task(root_queue, queue_id)
    other, _ = create_task(root_queue, queue_id)
    claims = {c["status"]["taskId"]: c for c in claim(root_queue, queue_id, tasks=2)}
    rq = run_queue(pserver, claims[mine])
    expires = from_now(days=1)
    ref = {
        "storageType": "reference",
        "url": "https://example.com/x",
        "contentType": "text/plain",
        "expires": expires,
    }

    check_schema(rq.reclaimTask(mine, 0), "task-reclaim-response")
    check_schema(rq.createArtifact(mine, 0, "public/ok", ref), "post-artifact-response")

    for call, scope in (
        (lambda: rq.reclaimTask(other, 0), f"queue:reclaim-task:{other}/0"),
        (lambda: rq.createArtifact(other, 0, "public/x", ref), f"queue:create-artifact:{other}/0"),
        (lambda: rq.reportCompleted(other, 0), f"queue:resolve-task:{other}/0"),
        (lambda: rq.reportFailed(other, 0), f"queue:resolve-task:{other}/0"),
        (lambda: rq.reportException(other, 0, {"reason": "internal-error"}), f"queue:resolve-task:{other}/0"),
        (
            lambda: rq.claimWork(queue_id, {"workerGroup": "wg", "workerId": "w1"}),
            f"queue:claim-work:{queue_id}",
        ),
        (lambda: rq.createTask(slugid.nice(), task_def(queue_id)), f"queue:create-task:lowest:{queue_id}"),
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            call()
        body = rest_error(exc, 403, "InsufficientScopes")
        assert scope in body["message"], (scope, body["message"])
    assert check_status(root_queue.status(other))["state"] == "running"
    assert check_status(rq.reportCompleted(mine, 0))["state"] == "completed"


def test_task_credentials_cannot_issue_credentials(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    task_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, task_id)
    creds = c["credentials"]
    nested = temp_creds(
        {"clientId": creds["clientId"], "accessToken": creds["accessToken"]},
        [f"queue:resolve-task:{task_id}/0"],
    )
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        pserver.queue(nested, maxRetries=0).reportCompleted(task_id, 0)
    assert check_status(root_queue.status(task_id))["state"] == "running"


def test_static_client_temp_creds_limited_to_scopes(pserver: PlatformProcess) -> None:
    q = new_queue_id("tcw-issuer")
    scopes = ["queue:create-task:project:none", "queue:scheduler-id:-", f"queue:create-task:low:{q}"]
    for name in (None, "tcw-test/named-client"):
        creds = (
            temp_creds(ISSUER, scopes, name=name)
            if name is None
            else temp_creds(pserver.root_credentials, scopes, name=name)
        )
        queue = pserver.queue(creds, maxRetries=0)
        status = check_status(queue.createTask(slugid.nice(), task_def(q, priority="low")))
        assert status["state"] == "pending"
        for body, missing in (
            (task_def(q, priority="high"), f"queue:create-task:high:{q}"),
            (task_def(new_queue_id("tcw-issuer")), "queue:create-task:lowest:tcw-issuer/"),
        ):
            with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
                queue.createTask(slugid.nice(), body)
            assert missing in rest_error(exc, 403, "InsufficientScopes")["message"]


def test_issuer_role_expansion(pserver: PlatformProcess) -> None:
    """ISSUER holds only `assume:<role>`: the role's scopes (from --clients roles) must apply."""
    q = new_queue_id("tcw-issuer")
    queue = pserver.queue(ISSUER, maxRetries=0)
    check_status(queue.createTask(slugid.nice(), task_def(q, priority="low")))
    claims = claim(queue, q, worker_id="wi")
    assert len(claims) == 1


def test_temp_creds_cannot_exceed_issuer(pserver: PlatformProcess) -> None:
    creds = temp_creds(LIMITED, ["queue:create-task:lowest:tcw-limited/*", "queue:claim-work:*"])
    with pytest.raises(taskcluster.TaskclusterAuthFailure) as exc:
        pserver.queue(creds, maxRetries=0).createTask(slugid.nice(), task_def(new_queue_id("tcw-limited")))
    assert exc.value.status_code == 401


@pytest.mark.parametrize("window", ["expired", "not-yet-valid", "tampered"])
def test_invalid_temp_creds_are_401(pserver: PlatformProcess, window: str) -> None:
    now = utcnow()
    if window == "expired":  # beyond the validator's 5 minutes of allowed skew
        creds = temp_creds(
            pserver.root_credentials,
            ["*"],
            start=now - dt.timedelta(hours=3),
            expiry=now - dt.timedelta(hours=1),
        )
    elif window == "not-yet-valid":
        creds = temp_creds(
            pserver.root_credentials,
            ["*"],
            start=now + dt.timedelta(hours=1),
            expiry=now + dt.timedelta(hours=2),
        )
    else:
        creds = temp_creds(pserver.root_credentials, ["queue:create-task:project:none"])
        cert = json.loads(creds["certificate"])
        cert["scopes"] = ["*"]
        creds["certificate"] = json.dumps(cert, separators=(",", ":"))
    queue = pserver.queue(creds, maxRetries=0)
    with pytest.raises(taskcluster.TaskclusterAuthFailure) as exc:
        queue.createTask(slugid.nice(), task_def(new_queue_id()))
    assert exc.value.status_code == 401
    assert exc.value.body.get("code") == "AuthenticationFailed"


def test_expired_task_credentials_401(pserver: PlatformProcess) -> None:
    """Named credentials (the task-credential form) past expiry + 5 min skew: 401."""
    now = utcnow()
    creds = temp_creds(
        pserver.root_credentials,
        ["queue:status:*"],
        start=now - dt.timedelta(hours=2),
        expiry=now - dt.timedelta(minutes=10),
        name="task-client/x/0/on/wg/w/until/0",
    )
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        pserver.queue(creds, maxRetries=0).status(slugid.nice())


def test_authorized_scopes_restrict(pserver: PlatformProcess) -> None:
    q = new_queue_id()
    allowed = ["queue:create-task:project:none", "queue:scheduler-id:-", f"queue:create-task:lowest:{q}"]
    queue = pserver.queue(maxRetries=0, authorizedScopes=allowed)
    check_status(queue.createTask(slugid.nice(), task_def(q)))
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        queue.createTask(slugid.nice(), task_def(q, priority="high"))
    assert f"queue:create-task:high:{q}" in rest_error(exc, 403, "InsufficientScopes")["message"]
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        queue.claimWork(q, {"workerGroup": "wg", "workerId": "w1"})
    rest_error(exc, 403, "InsufficientScopes")
    # authorizedScopes beyond what the client holds: 401
    limited = pserver.queue(LIMITED, maxRetries=0, authorizedScopes=["queue:claim-work:anything/x"])
    with pytest.raises(taskcluster.TaskclusterAuthFailure):
        limited.createTask(slugid.nice(), task_def(new_queue_id("tcw-limited")))
    # authorizedScopes together with temporary credentials
    creds = temp_creds(pserver.root_credentials, ["queue:*"])
    restricted = pserver.queue(creds, maxRetries=0, authorizedScopes=["queue:status:*"])
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        restricted.createTask(slugid.nice(), task_def(q))
    rest_error(exc, 403, "InsufficientScopes")


def test_signed_url_with_temp_creds(
    pserver: PlatformProcess, root_queue: taskcluster.Queue, queue_id: str
) -> None:
    import requests

    task_id, _ = create_task(root_queue, queue_id)
    c = claim_task(root_queue, queue_id, task_id)
    rq = run_queue(pserver, c)
    rq.createArtifact(
        task_id,
        0,
        "private/ref",
        {
            "storageType": "reference",
            "url": "https://example.com/target",
            "contentType": "text/plain",
            "expires": from_now(days=1),
        },
    )
    creds = temp_creds(pserver.root_credentials, ["queue:get-artifact:private/ref"])
    url = pserver.queue(creds).buildSignedUrl("getArtifact", task_id, 0, "private/ref")
    resp = requests.get(url, allow_redirects=False, timeout=30)
    assert resp.status_code == 303 and resp.headers["Location"] == "https://example.com/target"
    creds = temp_creds(pserver.root_credentials, ["queue:get-artifact:private/other"])
    url = pserver.queue(creds).buildSignedUrl("getArtifact", task_id, 0, "private/ref")
    assert requests.get(url, allow_redirects=False, timeout=30).status_code == 403
