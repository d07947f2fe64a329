"""Acceptance (issue 2, item 3): bad credentials, missing scopes and bad input get clean 4xx answers.

Wrong token → 401, missing scope → 403 naming it, schema-invalid body → 400 InputValidationError,
unparseable JSON or wrong content type → 400 MalformedPayload, bad path parameters → 400
InvalidRequestArguments; and a few hundred generated bad requests (hypothesis) never produce a 5xx.
Requests with deliberately malformed bytes are signed with `mohawk` exactly as the official client
signs, so they pass authentication and reach the body handling.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import mohawk
import pytest
import requests
import slugid
import taskcluster
from helpers.platformapi import LIMITED, check_status, claim_task, create_task, rest_error
from helpers.platformproc import PlatformProcess
from helpers.tasks import from_now, new_queue_id, task_def
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def signed(
    platform: PlatformProcess,
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "",
    creds: dict[str, str] | None = None,
    timestamp: int | None = None,
    sign_body: bytes | None = None,
) -> requests.Response:
    """Send raw bytes, Hawk-signed as the official client signs (mohawk, sha256)."""
    creds = creds or platform.root_credentials
    url = platform.root_url + path
    sender = mohawk.Sender(
        credentials={"id": creds["clientId"], "key": creds["accessToken"], "algorithm": "sha256"},
        url=url,
        method=method,
        content=body if sign_body is None else sign_body,
        content_type=content_type,
        ext="e30=",
        _timestamp=timestamp,
    )
    headers = {"Authorization": sender.request_header}
    if content_type:
        headers["Content-Type"] = content_type
    return requests.request(method, url, data=body, headers=headers, timeout=60, allow_redirects=False)


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    if code:
        assert body["code"] == code, body
        assert body["message"] and isinstance(body["requestInfo"], dict), body
    return body


# -- fixed negative cases --------------------------------------------------------------------


def test_wrong_access_token_401(pserver: PlatformProcess) -> None:
    for creds in (
        {**pserver.root_credentials, "accessToken": "wrong"},
        {"clientId": "nobody", "accessToken": "x"},
    ):
        queue = pserver.queue(creds, maxRetries=0)
        with pytest.raises(taskcluster.TaskclusterAuthFailure) as exc:
            queue.createTask(slugid.nice(), task_def(new_queue_id()))
        assert exc.value.status_code == 401 and exc.value.body["code"] == "AuthenticationFailed"
        # even a method anonymous could call: bad credentials are never silently downgraded
        with pytest.raises(taskcluster.TaskclusterAuthFailure):
            queue.status(slugid.nice())
    resp = signed(
        pserver,
        "GET",
        f"/api/queue/v1/task/{slugid.nice()}/status",
        creds={**pserver.root_credentials, "accessToken": "wrong"},
    )
    assert_error(resp, 401, "AuthenticationFailed")
    assert resp.headers.get("WWW-Authenticate", "").lower().startswith("hawk")


def test_stale_timestamp_and_payload_hash_mismatch_401(pserver: PlatformProcess) -> None:
    path = f"/api/queue/v1/task/{slugid.nice()}"
    body = json.dumps(task_def(new_queue_id())).encode()
    stale = signed(pserver, "PUT", path, body, "application/json", timestamp=int(time.time()) - 20 * 60)
    assert_error(stale, 401, "AuthenticationFailed")
    tampered = signed(
        pserver, "PUT", path, body, "application/json", sign_body=body.replace(b"payload", b"pAyload")
    )
    assert_error(tampered, 401, "AuthenticationFailed")
    good = signed(pserver, "PUT", path, body, "application/json")
    assert good.status_code == 200, good.text


def test_bewit_and_authorization_header_together_401(pserver: PlatformProcess) -> None:
    queue = pserver.queue(maxRetries=0)
    task_id = slugid.nice()
    url = queue.buildSignedUrl("status", task_id)
    assert requests.get(url, timeout=10).status_code == 404  # the bewit alone authenticates
    path = url[len(pserver.root_url) :]
    sender = mohawk.Sender(
        credentials={
            "id": pserver.root_credentials["clientId"],
            "key": pserver.root_access_token,
            "algorithm": "sha256",
        },
        url=url,
        method="GET",
        content="",
        content_type="",
        ext="e30=",
    )
    resp = requests.get(pserver.root_url + path, headers={"Authorization": sender.request_header}, timeout=10)
    assert_error(resp, 401, "AuthenticationFailed")


def test_missing_scope_403_names_it(pserver: PlatformProcess) -> None:
    queue = pserver.queue(LIMITED, maxRetries=0)
    ok_q = new_queue_id("tcw-limited")
    check_status(queue.createTask(slugid.nice(), task_def(ok_q)))
    other_q = new_queue_id()
    cases = [
        (task_def(other_q), f"queue:create-task:lowest:{other_q}"),
        (task_def(ok_q, routes=["index.tcw.secret"]), "queue:route:index.tcw.secret"),
        (task_def(ok_q, scopes=["secrets:get:prod"]), "secrets:get:prod"),
        (task_def(ok_q, schedulerId="sched-x"), "queue:scheduler-id:sched-x"),
    ]
    for body, scope in cases:
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            queue.createTask(slugid.nice(), body)
        msg = rest_error(exc, 403, "InsufficientScopes")["message"]
        assert scope in msg, (scope, msg)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        queue.claimWork(ok_q, {"workerGroup": "wg", "workerId": "w1"})
    assert f"queue:claim-work:{ok_q}" in rest_error(exc, 403, "InsufficientScopes")["message"]
    anon = pserver.queue(None, maxRetries=0)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        anon.createTask(slugid.nice(), task_def(ok_q))
    rest_error(exc, 403, "InsufficientScopes")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("metadata"),
        lambda b: b.pop("payload"),
        lambda b: b.update(unknownField=1),
        lambda b: b.update(priority="urgent"),
        lambda b: b.update(retries=50),
        lambda b: b["metadata"].update(source="ftp://nope"),
        lambda b: b.update(taskQueueId="UPPER/CASE"),
        lambda b: b.update(deadline="tomorrow"),
        lambda b: b.update(dependencies=["not-a-slugid"]),
        lambda b: b.update(scopes=[None]),
    ],
)
def test_schema_invalid_body_400(
    root_queue: taskcluster.Queue, mutate: Callable[[dict[str, Any]], object]
) -> None:
    body = task_def(new_queue_id())
    mutate(body)
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.createTask(slugid.nice(), body)
    rest_error(exc, 400, "InputValidationError")


def test_semantic_input_errors_400(root_queue: taskcluster.Queue) -> None:
    for body in (
        task_def(new_queue_id(), scopes=["queue:**"]),
        task_def(new_queue_id(), dependencies=[slugid.nice()]),  # unknown dependency
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            root_queue.createTask(slugid.nice(), body)
        rest_error(exc, 400)


def test_bad_json_and_content_type_400(pserver: PlatformProcess) -> None:
    path = f"/api/queue/v1/task/{slugid.nice()}"
    assert_error(
        signed(pserver, "PUT", path, b'{"taskQueueId": ', "application/json"), 400, "MalformedPayload"
    )
    good = json.dumps(task_def(new_queue_id())).encode()
    assert_error(signed(pserver, "PUT", path, good, "text/plain"), 400, "MalformedPayload")
    assert_error(signed(pserver, "PUT", path, b"", ""), 400)


def test_body_too_large_413(pserver: PlatformProcess) -> None:
    body = json.dumps(task_def(new_queue_id(), extra={"pad": "x" * (11 * 1024 * 1024)})).encode()
    # Unsigned: mohawk needs ~5 s of CPU to hash 11 MB, and the size limit applies before auth anyway.
    resp = requests.put(
        f"{pserver.root_url}/api/queue/v1/task/{slugid.nice()}",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert_error(resp, 413, "InputTooLarge")


def test_invalid_path_parameters_400(root_queue: taskcluster.Queue, pserver: PlatformProcess) -> None:
    calls = [
        lambda: root_queue.status("not-a-task-id"),
        lambda: root_queue.status("A" * 22),  # right length, not a v4 slugid
        lambda: root_queue.task("abc/def"),
        lambda: root_queue.claimWork("prov/UpperCase", {"workerGroup": "wg", "workerId": "w"}),
        lambda: root_queue.reportCompleted(slugid.nice(), "abc"),
        lambda: root_queue.listArtifacts(slugid.nice(), "-1"),
    ]
    for call in calls:
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            call()
        rest_error(exc, 400, "InvalidRequestArguments")
    for body in (
        {"workerGroup": "wg", "workerId": "w", "tasks": 33},
        {"workerGroup": "wg", "workerId": "bad id"},
    ):
        with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
            root_queue.claimWork(new_queue_id(), body)
        rest_error(exc, 400, "InputValidationError")
    with pytest.raises(taskcluster.TaskclusterRestFailure) as exc:
        root_queue.status(slugid.nice())
    rest_error(exc, 404, "ResourceNotFound")
    assert requests.get(pserver.root_url + "/api/queue/v1/no-such-route", timeout=10).status_code == 404


def test_ping_and_heartbeat(pserver: PlatformProcess) -> None:
    assert pserver.queue(None).ping()["alive"] is True
    for svc in ("queue", "object", "auth", "index", "purge-cache"):
        resp = requests.get(f"{pserver.root_url}/api/{svc}/v1/ping", timeout=10)
        assert resp.status_code == 200 and resp.json()["alive"] is True, svc
    assert requests.get(pserver.root_url + "/__heartbeat__", timeout=10).status_code == 200


# -- generated bad input: never a 5xx ------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "*", "**", "2020-01-01", "9999-99-99T99:99:99Z", "\x00", "a" * 5000]),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
TASK_KEYS = [
    "taskQueueId",
    "provisionerId",
    "workerType",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "requires",
    "routes",
    "priority",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
    "unknownKey",
]
METADATA_KEYS = ["name", "description", "owner", "source", "unknown"]
SPECIAL = st.sampled_from(
    [
        2**63,
        -(2**63) - 1,
        10**40,
        -1,
        0,
        1.5,
        "highest",
        "all-resolved",
        [],
        {},
        ["a", "a"],
        [slugid.nice()],
        "x/y",
        "prov/wt",
        "1970-01-01T00:00:00.000Z",
        "2999-01-01T00:00:00Z",
    ]
)
DELETE = object()


@st.composite
def mutated_task(draw: st.DrawFn) -> dict[str, Any]:
    body = task_def(new_queue_id())
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.one_of(st.just(DELETE), json_values, SPECIAL))
        if draw(st.booleans()):
            key = draw(st.sampled_from(METADATA_KEYS))
            target = body["metadata"] if isinstance(body.get("metadata"), dict) else body
        else:
            key = draw(st.sampled_from(TASK_KEYS))
            target = body
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    return body


def _no_5xx(call: Callable[[], object]) -> None:
    try:
        call()
    except taskcluster.TaskclusterRestFailure as exc:  # includes TaskclusterAuthFailure
        assert exc.status_code is not None and exc.status_code < 500, f"{exc.status_code}: {exc.body}"
    except taskcluster.TaskclusterConnectionError as exc:
        pytest.fail(f"server dropped the connection: {exc}")


@pytest.fixture(scope="module")
def fuzz_target(pserver: PlatformProcess) -> dict[str, Any]:
    """A running task whose run the fuzzers poke at (exceptions, artifacts)."""
    queue = pserver.queue(maxRetries=0)
    q = new_queue_id()
    task_id, _ = create_task(queue, q)
    c = claim_task(queue, q, task_id)
    return {"queue": queue, "q": q, "task_id": task_id, "claim": c}


@FUZZ
@given(body=mutated_task())
def test_fuzz_task_definitions(
    pserver: PlatformProcess, fuzz_target: dict[str, Any], body: dict[str, Any]
) -> None:
    _no_5xx(lambda: fuzz_target["queue"].createTask(slugid.nice(), body))


@FUZZ
@given(endpoint=st.integers(0, 9), value=json_values.filter(lambda v: v is not None))
def test_fuzz_random_json_bodies(
    pserver: PlatformProcess, fuzz_target: dict[str, Any], endpoint: int, value: Any
) -> None:
    queue, task_id, q = fuzz_target["queue"], fuzz_target["task_id"], fuzz_target["q"]
    obj = taskcluster.Object(pserver.options(maxRetries=0))
    index = taskcluster.Index(pserver.options(maxRetries=0))
    purge = taskcluster.PurgeCache(pserver.options(maxRetries=0))
    calls = [
        lambda: queue.createTask(slugid.nice(), value),
        lambda: queue.claimWork(new_queue_id(), value),
        lambda: queue.reportException(task_id, 0, value),
        lambda: queue.createArtifact(task_id, 0, "public/fuzz", value),
        lambda: queue.finishArtifact(task_id, 0, "public/fuzz", value),
        lambda: obj.createUpload("tcw-fuzz/obj", value),
        lambda: obj.finishUpload("tcw-fuzz/obj", value),
        lambda: obj.startDownload("tcw-fuzz/obj", value),
        lambda: index.insertTask("tcw.fuzz", value),
        lambda: purge.purgeCache(q, value),
    ]
    _no_5xx(calls[endpoint])


RAW_ENDPOINTS = [
    ("PUT", "/api/queue/v1/task/{new}"),
    ("POST", "/api/queue/v1/claim-work/{q}"),
    ("POST", "/api/queue/v1/task/{task}/runs/0/exception"),
    ("POST", "/api/queue/v1/task/{task}/runs/0/artifacts/public%2Fraw"),
    ("PUT", "/api/queue/v1/task/{task}/runs/0/artifacts/public%2Fraw"),
    ("PUT", "/api/object/v1/upload/tcw-raw%2Fobj"),
    ("PUT", "/api/object/v1/start-download/tcw-raw%2Fobj"),
    ("PUT", "/api/index/v1/task/tcw.raw"),
    ("POST", "/api/auth/v1/scopes/expand"),
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "application/octet-stream",
    "multipart/form-data; boundary=zz",
    "application/x-www-form-urlencoded",
    "application/JSON",
]


@FUZZ
@given(
    endpoint=st.sampled_from(RAW_ENDPOINTS),
    body=st.one_of(
        st.binary(max_size=2048),
        st.sampled_from(
            [
                b"{",
                b"[]",
                b"null",
                b"NaN",
                b'{"a": NaN}',
                b"\xff\xfe{}",
                b'{"tasks": 1e999}',
                b'"' + b"\\u" * 10 + b'"',
                b"[" * 5000 + b"]" * 5000,
                b'{"reason": "worker-shutdown"}',
            ]
        ),
        json_values.map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(CONTENT_TYPES),
    sign=st.booleans(),
)
def test_fuzz_raw_bytes(
    pserver: PlatformProcess,
    fuzz_target: dict[str, Any],
    endpoint: tuple[str, str],
    body: bytes,
    content_type: str,
    sign: bool,
) -> None:
    method, template = endpoint
    path = template.format(new=slugid.nice(), q=fuzz_target["q"], task=fuzz_target["task_id"])
    if sign:
        resp = signed(pserver, method, path, body, content_type)
    else:
        headers = {"Content-Type": content_type} if content_type else {}
        resp = requests.request(method, pserver.root_url + path, data=body, headers=headers, timeout=60)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])


def test_server_healthy_after_fuzzing(pserver: PlatformProcess, fuzz_target: dict[str, Any]) -> None:
    """Runs after the fuzzers (file order): nothing they sent broke the task they poked at."""
    queue, task_id = fuzz_target["queue"], fuzz_target["task_id"]
    status = check_status(queue.status(task_id))
    assert status["runs"][0]["state"] in ("running", "exception")
    q = new_queue_id()
    new_id, _ = create_task(queue, q, expires=from_now(days=30))
    assert check_status(queue.status(new_id))["state"] == "pending"
