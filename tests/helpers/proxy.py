"""Helpers of the taskcluster-proxy tests: a platform containers can reach, task scripts, checks.

The proxy tests run the platform (``tcworker queue serve``), the worker (``tcworker run``) and the
tasks as real processes. Tasks talk to the proxy with what a task has: Python's ``urllib`` on the
host engines, busybox ``wget`` / ``nc`` in containers. Each task script prints one
``PROXY-RESULT <json>`` line that the test reads back from the task log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from helpers import platformproc
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter
from helpers.workerproc import PROVISIONER_ID

CLAIM_TIMEOUT = 5  # seconds: the claim's credentials expire during a task that sleeps longer
SECRET = "private-content-4711"
RESULT = re.compile(r"PROXY-RESULT (\{.*\})")


class ReachablePlatform(PlatformProcess):
    """A platform listening on ``host`` (docker0's address, so containers can follow redirects)."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.host = host

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--listen") + 1] = f"{self.host}:{self.port}"
        return cmd

    def start(self) -> PlatformProcess:
        original = platformproc._ROOT_URL_LINE
        platformproc._ROOT_URL_LINE = re.compile(r"rootUrl:\s*(http://" + re.escape(self.host) + r":(\d+))")
        try:
            return super().start()
        finally:
            platformproc._ROOT_URL_LINE = original


def producer_payload() -> dict[str, Any]:
    """A generic-worker task publishing ``private/secret.txt``."""
    return {
        "command": [["/bin/sh", "-c", f"echo {SECRET} > secret.txt"]],
        "maxRunTime": 60,
        "artifacts": [{"type": "file", "path": "secret.txt", "name": "private/secret.txt"}],
    }


def docker_producer_payload(image: str) -> dict[str, Any]:
    return {
        "image": image,
        "command": ["/bin/sh", "-c", f"echo {SECRET} > /secret.txt"],
        "maxRunTime": 60,
        "artifacts": {"private/secret.txt": {"type": "file", "path": "/secret.txt"}},
    }


def followup_definition(sub: Submitter, follow_type: str) -> dict[str, Any]:
    """The follow-up task the consumer creates through the proxy (on a queue nobody serves)."""
    task = sub.task_definition({"command": [["true"]], "maxRunTime": 10}, mark=False)
    task["workerType"] = follow_type
    task["priority"] = "lowest"
    return task


def consumer_scopes(sub: Submitter, follow_type: str) -> list[str]:
    return [
        f"queue:create-task:lowest:{PROVISIONER_ID}/{follow_type}",
        "queue:scheduler-id:-",
        "queue:create-task:project:none",
        "queue:get-artifact:private/secret.txt",
    ]


def scan_processes_for(needles: list[bytes], skip: set[int], seconds: float) -> int:
    """Fail when any needle is in a process's environ or argv (all of /proc, containers included:
    their processes are host processes); returns how many files were read."""
    import os
    import time

    deadline = time.monotonic() + seconds
    scanned = 0
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) in skip:
                continue
            for what in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{pid}/{what}", "rb") as fh:
                        data = fh.read()
                except OSError:
                    continue
                scanned += 1
                for needle in needles:
                    assert needle not in data, f"{needle!r} found in /proc/{pid}/{what}"
        time.sleep(0.5)
    return scanned


def result_of(log: str) -> dict[str, Any]:
    found = RESULT.findall(log)
    assert found, f"the task printed no PROXY-RESULT line:\n{log[-4000:]}"
    return dict(json.loads(found[-1]))


# Runs as the task (any user) with the system Python: no third-party modules.
HOST_CONSUMER = r"""
import gzip, json, os, sys, time, urllib.request, urllib.error

proxy = os.environ["TASKCLUSTER_PROXY_URL"]
root = os.environ["TASKCLUSTER_ROOT_URL"]
producer = os.environ["PRODUCER"]
out = {"proxy": proxy}

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None

def call(method, path, body=None, follow=False, raw=None, base=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request((base or proxy) + path, data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as r:
            data = r.read()
            if r.headers.get("Content-Encoding") == "gzip":  # the object service serves gzip as stored
                data = gzip.decompress(data)
            return r.status, dict(r.headers), data.decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode("utf-8", "replace")
    except OSError as e:
        return -1, {}, repr(e)

def artifact():
    return call("GET", f"/api/queue/v1/task/{producer}/runs/0/artifacts/private/secret.txt", follow=True)

st, headers, body = call("GET", "/api/queue/v1/task/" + os.environ["TASK_ID"])
out["own_task"] = st
out["own_task_has_payload"] = "payload" in body
out["headers"] = {k: v for k, v in headers.items() if k.lower().startswith("x-taskcluster")}
out["legacy"] = call("GET", "/queue/v1/task/" + os.environ["TASK_ID"])[0]
st, _, body = artifact()
out["artifact"] = [st, body.strip()]
st, _, body = call("PUT", "/api/queue/v1/task/" + os.environ["FOLLOWUP_ID"], json.loads(os.environ["FOLLOWUP_DEF"]))
out["create_task"] = [st, body[:300]]
st, _, body = call("POST", f"/api/queue/v1/task/{producer}/cancel")
out["cancel"] = [st, body[:2000]]
st, headers, body = call("POST", "/bewit", raw=f"{root}/api/queue/v1/task/{producer}/runs/0/artifacts/private/secret.txt".encode())
out["bewit"] = [st, headers.get("Location", "")]
out["unknown_service"] = call("GET", "/not_a_host!/v1/x")[0]
other = os.environ.get("OTHER_PROXY")
if other:
    out["other_proxy"] = call("GET", "/api/queue/v1/task/" + os.environ["TASK_ID"], base=other)[:3:2]
time.sleep(float(os.environ.get("SLEEP", "0")))
out["after_reclaim"] = [call("GET", "/api/queue/v1/task/" + os.environ["TASK_ID"])[0], artifact()[0]]
print("PROXY-RESULT " + json.dumps(out), flush=True)
"""

# busybox sh in a container: wget for GETs, nc for PUT / POST (busybox wget has no --method).
DOCKER_CONSUMER = r"""
set -u
raw() {  # raw METHOD PATH BODY: one HTTP/1.0 exchange with the proxy through nc
  { printf '%s %s HTTP/1.0\r\nHost: taskcluster\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
    "$1" "$2" "${#3}" "$3"; sleep 2; } | nc taskcluster 80
}
status() { head -n1 | cut -d' ' -f2; }
own=$(wget -q -O - "http://taskcluster/api/queue/v1/task/$TASK_ID" 2>&1 | grep -c '"payload"')
legacy=$(wget -q -O - "http://taskcluster/queue/v1/task/$TASK_ID" 2>&1 | grep -c '"payload"')
# The object service serves the artifact gzip-encoded, as it was uploaded: gunzip it.
art=$(wget -q -O - "http://taskcluster/api/queue/v1/task/$PRODUCER/runs/0/artifacts/private/secret.txt" | gunzip -c)
create=$(raw PUT "/api/queue/v1/task/$FOLLOWUP_ID" "$FOLLOWUP_DEF" | status)
cancel_all=$(raw POST "/api/queue/v1/task/$PRODUCER/cancel" "" | tr -d '\r"\\' | tr '\n' ' ')
cancel=$(echo "$cancel_all" | cut -d' ' -f2)
missing=$(echo "$cancel_all" | grep -o 'queue:cancel-task[^ ,]*' | head -n1)
bewit=$(raw POST /bewit "$TASKCLUSTER_ROOT_URL/api/queue/v1/task/$PRODUCER/runs/0/artifacts/private/secret.txt" \
  | tr -d '\r' | grep -i '^Location:' | cut -d' ' -f2)
credenv=$(env | grep -c -e TASKCLUSTER_ACCESS_TOKEN -e TASKCLUSTER_CERTIFICATE -e TASKCLUSTER_CLIENT_ID)
sleep "${SLEEP:-0}"
after=$(wget -q -O - "http://taskcluster/api/queue/v1/task/$TASK_ID" 2>&1 | grep -c '"payload"')
after_art=$(wget -q -O - "http://taskcluster/api/queue/v1/task/$PRODUCER/runs/0/artifacts/private/secret.txt" | gunzip -c)
echo "PROXY-RESULT {\"own\": $own, \"legacy\": $legacy, \"artifact\": \"$art\", \"create_task\": \"$create\", \"cancel\": \"$cancel\", \"missing\": \"$missing\", \"bewit\": \"$bewit\", \"after_reclaim\": $after, \"after_artifact\": \"$after_art\", \"proxy_url\": \"$TASKCLUSTER_PROXY_URL\", \"credential_env\": $credenv}"
"""
