"""taskcluster-proxy on the docker engine, platform, worker and containers as real processes:
``http://taskcluster`` inside a docker-worker container (seed 000's URL), scopes, follow-up task,
private artifact, 403 naming the scope, reclaim, bewit; the run's network is reachable only from
its own containers and removed afterwards; generic-worker payloads with ``docker-bridge``."""

from __future__ import annotations

import json
import time
from typing import Any

import docker
import requests
import slugid
from helpers.proxy import (
    CLAIM_TIMEOUT,
    DOCKER_CONSUMER,
    SECRET,
    consumer_scopes,
    docker_producer_payload,
    followup_definition,
    result_of,
    scan_processes_for,
)

SLEEP = CLAIM_TIMEOUT + 3


def run_networks(task_id: str) -> list[Any]:
    client = docker.from_env()
    try:
        return list(client.networks.list(filters={"label": f"tcworker.run={task_id}/0"}))
    finally:
        client.close()


def docker_consumer(sub: Any, image: str, producer: str) -> tuple[dict[str, Any], str]:
    follow_type = "proxy-followup"
    followup_id = slugid.nice()
    payload = {
        "image": image,
        "command": ["/bin/sh", "-c", DOCKER_CONSUMER],
        "maxRunTime": 120,
        "features": {"taskclusterProxy": True},
        "env": {
            "PRODUCER": producer,
            "FOLLOWUP_ID": followup_id,
            "FOLLOWUP_DEF": json.dumps(followup_definition(sub, follow_type)),
            "SLEEP": str(SLEEP),
        },
    }
    return payload, followup_id


def test_container_reaches_taskcluster_through_the_proxy(
    start_worker: Any, proxy_platform: Any, image: str
) -> None:
    worker, sub = start_worker(engine="docker", capacity=2)
    producer = sub.create(docker_producer_payload(image))
    assert sub.wait_run(producer, worker=worker)["state"] == "completed", sub.explain(producer)
    payload, followup_id = docker_consumer(sub, image, producer)
    task_a = sub.create(payload, scopes=consumer_scopes(sub, "proxy-followup"))
    sub.wait_running(task_a, worker=worker)

    # While A runs: its network exists; a container of another task (B, no proxy feature) can
    # route to A's gateway but is refused, and finds no ``taskcluster`` host of its own.
    deadline = time.monotonic() + 30
    networks: list[Any] = []
    while not networks and time.monotonic() < deadline:
        networks = run_networks(task_a)
        time.sleep(0.2)
    assert len(networks) == 1, networks
    gateway = networks[0].attrs["IPAM"]["Config"][0]["Gateway"]
    intruder = (
        f"wget -O - http://{gateway}/api/queue/v1/task/{task_a} 2>&1; echo; "
        "wget -O - http://taskcluster/api/queue/v1/task/$TASK_ID 2>&1; echo; echo INTRUDER-DONE"
    )
    task_b = sub.create({"image": image, "command": ["/bin/sh", "-c", intruder], "maxRunTime": 60})
    assert sub.wait_run(task_b, worker=worker)["state"] == "completed", sub.explain(task_b)
    log_b = sub.log(task_b)
    assert "INTRUDER-DONE" in log_b
    assert "403" in log_b, log_b[-3000:]  # A's proxy refuses B's container
    assert '"payload"' not in log_b, "a container of another task read through A's proxy"
    assert "bad address 'taskcluster'" in log_b or "unable to resolve" in log_b.lower(), log_b[-3000:]

    # No process (the container's included) shows the worker's token or the run's credentials.
    needles = [worker.config["accessToken"].encode(), f"task-client/{task_a}".encode()]
    assert scan_processes_for(needles, {proxy_platform.pid}, 2) > 20
    run = sub.wait_run(task_a, worker=worker, timeout=120)
    log = sub.log(task_a)
    assert run["state"] == "completed", sub.explain(task_a)
    result = result_of(log)
    assert result["proxy_url"] == "http://taskcluster", result
    assert result["credential_env"] == 0, result
    # Seed 000: ``taskcluster/queue/v1/task/<taskId>`` answers on port 80 with the definition.
    assert result["legacy"] == 1 and result["own"] == 1, result
    assert result["artifact"] == SECRET, result
    assert result["create_task"] == "200", result
    assert sub.queue.task(followup_id)["workerType"] == "proxy-followup"
    assert result["cancel"] == "403" and result["missing"].startswith("queue:cancel-task:"), result
    assert result["after_reclaim"] == 1 and result["after_artifact"] == SECRET, result
    got = requests.get(result["bewit"], timeout=30)
    assert got.status_code == 200 and got.text.strip() == SECRET, (result["bewit"], got.status_code)
    assert "refused a connection" in worker.output()
    # The run's network is gone with the run.
    deadline = time.monotonic() + 30
    while run_networks(task_a) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_networks(task_a) == []


def test_generic_payload_on_docker_bridge(start_worker: Any, image: str) -> None:
    worker, sub = start_worker(engine="docker", dockerImage=image)
    script = (
        'echo "URL=$TASKCLUSTER_PROXY_URL NET=$TASKCLUSTER_DOCKER_NETWORK GW=$TASKCLUSTER_PROXY_GATEWAY"; '
        'wget -O - "$TASKCLUSTER_PROXY_URL/api/queue/v1/task/$TASK_ID" 2>&1 | grep -c \'"payload"\''
    )
    task_id = sub.create(
        {
            "command": [["/bin/sh", "-c", script]],
            "maxRunTime": 60,
            "features": {"taskclusterProxy": True},
            "taskclusterProxyInterface": "docker-bridge",
        }
    )
    run = sub.wait_run(task_id, worker=worker)
    log = sub.log(task_id)
    assert run["state"] == "completed", sub.explain(task_id)
    line = next(x for x in log.splitlines() if x.startswith("URL="))
    fields = dict(part.split("=", 1) for part in line.split())
    port = int(worker.config["taskclusterProxyPort"])
    assert fields["URL"] == f"http://{fields['GW']}:{port}", line
    assert fields["NET"] == f"tcworker-task-{task_id}-0", line
    assert "\n1\n" in log.replace("\r", ""), log[-2000:]


def test_docker_task_without_the_feature_has_no_proxy(start_worker: Any, image: str) -> None:
    worker, sub = start_worker(engine="docker")
    script = 'echo "URL=[$TASKCLUSTER_PROXY_URL]"; wget -O - http://taskcluster/ 2>&1; echo; echo DONE'
    task_id = sub.create({"image": image, "command": ["/bin/sh", "-c", script], "maxRunTime": 60})
    assert sub.wait_run(task_id, worker=worker)["state"] == "completed", sub.explain(task_id)
    log = sub.log(task_id)
    assert "URL=[]" in log and "DONE" in log
    assert "bad address 'taskcluster'" in log or "unable to resolve" in log.lower(), log[-2000:]
    assert run_networks(task_id) == []
