"""taskcluster-proxy on the simple and multiuser engines, with platform, worker and tasks as real
processes: scopes, follow-up task, private artifact, 403 naming the scope, reclaim, bewit,
no proxy without the feature, capacity-2 isolation and no credentials where the task can see."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import requests
import slugid
from helpers.ci import require_multiuser_host
from helpers.proxy import (
    CLAIM_TIMEOUT,
    HOST_CONSUMER,
    SECRET,
    consumer_scopes,
    followup_definition,
    producer_payload,
    result_of,
)
from helpers.submitter import Submitter
from helpers.workerproc import WorkerProcess

SLEEP = CLAIM_TIMEOUT + 3  # past the expiry of the claim's credentials: only reclaimed ones work


def needs_root() -> None:
    require_multiuser_host()


def run_producer(worker: WorkerProcess, sub: Submitter) -> str:
    producer = sub.create(producer_payload())
    run = sub.wait_run(producer, worker=worker)
    assert run["state"] == "completed", sub.explain(producer)
    return producer


def consumer_payload(sub: Submitter, producer: str, **env: str) -> tuple[dict[str, Any], str, str]:
    follow_type = "proxy-followup"
    followup_id = slugid.nice()
    payload = {
        "command": [["python3", "-c", HOST_CONSUMER]],
        "maxRunTime": 120,
        "features": {"taskclusterProxy": True},
        "env": {
            "PRODUCER": producer,
            "FOLLOWUP_ID": followup_id,
            "FOLLOWUP_DEF": json.dumps(followup_definition(sub, follow_type)),
            "SLEEP": str(SLEEP),
            **env,
        },
    }
    return payload, followup_id, follow_type


def check_consumer(sub: Submitter, task_id: str, result: dict[str, Any], followup_id: str) -> None:
    assert result["own_task"] == 200 and result["own_task_has_payload"], result
    assert result["legacy"] == 200, result
    assert result["artifact"] == [200, SECRET], result
    assert result["create_task"][0] == 200, result["create_task"]
    assert sub.queue.task(followup_id)["workerType"] == "proxy-followup"
    assert result["cancel"][0] == 403, result
    assert "queue:cancel-task:" in result["cancel"][1], result  # the 403 names the missing scope
    assert result["unknown_service"] == 404, result
    assert result["after_reclaim"] == [200, 200], result
    headers = {k.lower(): v for k, v in result["headers"].items()}
    assert headers["x-taskcluster-proxy-temp-clientid"].startswith(f"task-client/{task_id}/0/"), headers
    assert json.loads(headers["x-taskcluster-authorized-scopes"])[-1] == f"queue:create-artifact:{task_id}/0"
    assert headers["x-taskcluster-endpoint"].endswith(f"/api/queue/v1/task/{task_id}"), headers
    # The bewit URL downloads the private artifact without any credentials.
    status, location = result["bewit"]
    assert status == 303 and "bewit=" in location, result
    got = requests.get(location, timeout=30)
    assert got.status_code == 200 and got.text.strip() == SECRET, (got.status_code, got.text[:300])
    plain = requests.get(location.split("?")[0], timeout=30, allow_redirects=False)
    assert plain.status_code in (401, 403), "the artifact must not be readable without the bewit"


@pytest.mark.parametrize("engine", ["simple", "multiuser"])
def test_task_uses_taskcluster_with_its_own_scopes(start_worker: Any, engine: str) -> None:
    if engine == "multiuser":
        needs_root()
    worker, sub = start_worker(engine=engine)
    producer = run_producer(worker, sub)
    payload, followup_id, follow_type = consumer_payload(sub, producer)
    task_id = sub.create(payload, scopes=consumer_scopes(sub, follow_type))
    run = sub.wait_run(task_id, worker=worker, timeout=120)
    log = sub.log(task_id)
    assert run["state"] == "completed", sub.explain(task_id)
    check_consumer(sub, task_id, result_of(log), followup_id)
    assert "[taskcluster-proxy] listening at 127.0.0.1:" in log


@pytest.mark.parametrize("engine", ["simple", "multiuser"])
def test_no_proxy_without_the_feature(start_worker: Any, engine: str) -> None:
    if engine == "multiuser":
        needs_root()
    worker, sub = start_worker(engine=engine)
    port = worker.config["taskclusterProxyPort"]
    script = (
        "import os, socket\n"
        "print('PROXY-URL', repr(os.environ.get('TASKCLUSTER_PROXY_URL')))\n"
        "s = socket.socket()\n"
        f"print('CONNECT', s.connect_ex(('127.0.0.1', {port})) != 0)\n"
    )
    task_id = sub.create({"command": [["python3", "-c", script]], "maxRunTime": 60})
    run = sub.wait_run(task_id, worker=worker)
    log = sub.log(task_id)
    assert run["state"] == "completed", sub.explain(task_id)
    assert "PROXY-URL None" in log and "CONNECT True" in log, log[-2000:]


def test_multiuser_task_cannot_use_another_tasks_proxy(start_worker: Any) -> None:
    """Capacity 2: task B's connection to task A's proxy port is refused (403, peer check); B's own
    proxy works; A's proxy keeps serving A."""
    needs_root()
    worker, sub = start_worker(engine="multiuser", capacity=2)
    base = int(worker.config["taskclusterProxyPort"])
    producer = run_producer(worker, sub)
    payload_a, followup_a, follow_type = consumer_payload(sub, producer)
    task_a = sub.create(payload_a, scopes=consumer_scopes(sub, follow_type))
    sub.wait_running(task_a, worker=worker)
    time.sleep(1.0)  # A's proxy is listening once its commands run
    payload_b, followup_b, _ = consumer_payload(sub, producer, SLEEP="0")
    # Both slots' URLs: B's own one works, the other (A's) must refuse B.
    urls = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 4}"]
    payload_b["env"]["OTHER_PROXY"] = "SEE_BELOW"
    payload_b["command"] = [
        [
            "/bin/sh",
            "-c",
            "for u in "
            + " ".join(urls)
            + '; do [ "$u" != "$TASKCLUSTER_PROXY_URL" ] && OTHER_PROXY=$u; done; '
            'export OTHER_PROXY; exec python3 -c "$SCRIPT"',
        ]
    ]
    payload_b["env"]["SCRIPT"] = HOST_CONSUMER
    task_b = sub.create(payload_b, scopes=consumer_scopes(sub, follow_type))
    run_b = sub.wait_run(task_b, worker=worker, timeout=120)
    assert run_b["state"] == "completed", sub.explain(task_b)
    result_b = result_of(sub.log(task_b))
    assert result_b["own_task"] == 200, result_b
    status, body = result_b["other_proxy"]
    assert status == 403 and "only this task's user" in body, result_b
    run_a = sub.wait_run(task_a, worker=worker, timeout=120)
    assert run_a["state"] == "completed", sub.explain(task_a)
    check_consumer(sub, task_a, result_of(sub.log(task_a)), followup_a)
    assert "refused a connection" in worker.output()


MANY_CONNECTIONS = r"""
import concurrent.futures, os, socket, time, urllib.request
proxy = os.environ["TASKCLUSTER_PROXY_URL"]
host, port = proxy.rsplit("/", 1)[-1].split(":")
held = []
for _ in range(600):  # far more idle connections than the per-run cap
    s = socket.create_connection((host, int(port)), timeout=10)
    held.append(s)
time.sleep(0.5)
def get(_=None):
    try:
        with urllib.request.urlopen(proxy + "/api/queue/v1/task/" + os.environ["TASK_ID"], timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return repr(e)
print("WHILE-HELD", get())
for s in held:
    s.close()
time.sleep(0.5)
with concurrent.futures.ThreadPoolExecutor(50) as pool:
    statuses = list(pool.map(get, range(200)))
print("AFTER", sorted(set(map(str, statuses))), len(statuses))
"""


def test_many_connections_do_not_break_the_proxy_or_the_worker(start_worker: Any) -> None:
    worker, sub = start_worker(engine="simple")
    task_id = sub.create(
        {
            "command": [["python3", "-c", MANY_CONNECTIONS]],
            "maxRunTime": 120,
            "features": {"taskclusterProxy": True},
        }
    )
    run = sub.wait_run(task_id, worker=worker, timeout=150)
    log = sub.log(task_id)
    assert run["state"] == "completed", sub.explain(task_id)
    assert "WHILE-HELD 503" in log, log[-2000:]  # over the cap: answered, not hung
    assert "AFTER ['200'] 200" in log, log[-2000:]
    # The worker is still healthy: the next task runs.
    after = sub.create({"command": [["true"]], "maxRunTime": 30})
    assert sub.wait_run(after, worker=worker)["state"] == "completed"


LEAK_CHECK = r"""
import os
print("ENV-NAMES", sorted(k for k in os.environ if k.startswith("TASKCLUSTER_")))
open("marker.txt", "w").write("x")
import time; time.sleep(6)
"""


@pytest.mark.parametrize("engine", ["simple", "multiuser"])
def test_credentials_never_visible_to_the_task(start_worker: Any, proxy_platform: Any, engine: str) -> None:
    """While a proxy task runs, no process's environment or argv and no file of the task holds the
    worker's token or a credential set of the run (its temporary clientId ``task-client/<taskId>``
    and certificate travel together with its access token)."""
    if engine == "multiuser":
        needs_root()
    worker, sub = start_worker(engine=engine, cleanUpTaskDirs=False)
    task_id = sub.create(
        {"command": [["python3", "-c", LEAK_CHECK]], "maxRunTime": 60, "features": {"taskclusterProxy": True}}
    )
    sub.wait_running(task_id, worker=worker)
    needles = [
        worker.config["accessToken"].encode(),
        f"task-client/{task_id}".encode(),
        b"TASKCLUSTER_ACCESS_TOKEN",
        b"TASKCLUSTER_CERTIFICATE",
    ]
    tasks_dir = worker.config["tasksDir"]
    deadline = time.monotonic() + 5
    scanned = 0
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            # The platform's argv holds the root token by the test harness's design; the worker's
            # own process and every task process are scanned.
            if not pid.isdigit() or int(pid) in (os.getpid(), proxy_platform.pid):
                continue
            for what in ("environ", "cmdline"):
                try:
                    data = open(f"/proc/{pid}/{what}", "rb").read()
                except OSError:
                    continue
                scanned += 1
                for needle in needles:
                    assert needle not in data, f"{needle!r} found in /proc/{pid}/{what}"
        time.sleep(0.5)
    assert scanned > 20
    run = sub.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", sub.explain(task_id)
    log = sub.log(task_id)
    assert "ENV-NAMES ['TASKCLUSTER_PROXY_URL', 'TASKCLUSTER_ROOT_URL']" in log, log[-2000:]
    for needle in needles[:2]:
        assert needle.decode() not in log
    files = 0
    for dirpath, _, names in os.walk(tasks_dir):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            data = open(path, "rb").read()
            files += 1
            for needle in needles[:2]:
                assert needle not in data, f"{needle!r} found in {path}"
    assert files >= 1  # marker.txt at least
