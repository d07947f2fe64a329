"""Create tasks and wait for their runs through the official `taskcluster` client, as a submitter does.

`Submitter` works on one task queue of its own (`Submitter.for_platform` picks a unique workerType),
so tests sharing one platform never see each other's tasks; every task it makes carries a unique
`E2E_MARK` env variable so `helpers.taskprocs` can find the processes a task left behind.
Artifacts are read back the way users read them (official download helper) or raw as served.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import slugid
import taskcluster
from taskcluster.download import downloadArtifactToBuf

from helpers.platformproc import PlatformProcess
from helpers.taskprocs import MARK_VAR
from helpers.workerproc import PROVISIONER_ID, WorkerProcess, unique_worker_type

RESOLVED_STATES = ("completed", "failed", "exception")


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Submitter:
    """Create tasks and wait for their runs through the official sync client (root credentials)."""

    queue: taskcluster.Queue
    root_url: str
    worker_type: str
    root_token: str
    mark: str = field(default_factory=lambda: "mark-" + slugid.nice())

    @classmethod
    def for_platform(cls, platform: PlatformProcess) -> Submitter:
        """A submitter with root credentials on a task queue of its own."""
        return cls(platform.queue(), platform.root_url, unique_worker_type(), platform.root_access_token)

    def task_definition(
        self,
        payload: dict[str, Any],
        *,
        retries: int = 1,
        deadline_minutes: float = 30,
        expires_days: float = 1,
        scopes: list[str] | None = None,
        mark: bool = True,
    ) -> dict[str, Any]:
        """A complete task for this test's queue. The payload env gets E2E_MARK unless `mark=False`."""
        payload = json.loads(json.dumps(payload))
        if mark and isinstance(payload.get("command"), list):
            env = payload.setdefault("env", {})
            if isinstance(env, dict):
                env.setdefault(MARK_VAR, self.mark)
        now = dt.datetime.now(dt.UTC)
        return {
            "provisionerId": PROVISIONER_ID,
            "workerType": self.worker_type,
            "schedulerId": "-",
            "taskGroupId": slugid.nice(),
            "created": iso(now),
            "deadline": iso(now + dt.timedelta(minutes=deadline_minutes)),
            "expires": iso(now + dt.timedelta(days=expires_days)),
            "retries": retries,
            "scopes": scopes or [],
            "payload": payload,
            "metadata": {
                "name": "tcworker e2e task",
                "description": "created by tests/e2e",
                "owner": "e2e@example.com",
                "source": "https://example.com/tcworker/tests/e2e",
            },
        }

    def create(self, payload: dict[str, Any], **kw: Any) -> str:
        task_id = slugid.nice()
        self.queue.createTask(task_id, self.task_definition(payload, **kw))
        return task_id

    def create_task(self, task: dict[str, Any]) -> str:
        task_id = slugid.nice()
        self.queue.createTask(task_id, task)
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        return dict(self.queue.status(task_id)["status"])

    def wait_run(
        self,
        task_id: str,
        run_id: int = 0,
        *,
        states: tuple[str, ...] = RESOLVED_STATES,
        timeout: float = 60,
        worker: WorkerProcess | None = None,
        poll: float = 0.1,
    ) -> dict[str, Any]:
        """Poll `status` until run `run_id` reaches one of `states`; returns that run."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(task_id)
            runs = last.get("runs", [])
            if len(runs) > run_id and runs[run_id]["state"] in states:
                return dict(runs[run_id])
            time.sleep(poll)
        msg = f"task {task_id} run {run_id} not in {states} after {timeout}s; status={json.dumps(last)}"
        if worker is not None:
            msg += f"\n--- worker output (tail) ---\n{worker.tail()}"
        raise AssertionError(msg)

    def wait_running(self, task_id: str, **kw: Any) -> dict[str, Any]:
        return self.wait_run(task_id, states=("running", *RESOLVED_STATES), **kw)

    # -- artifacts ------------------------------------------------------------------------

    def artifacts(self, task_id: str, run_id: int) -> dict[str, dict[str, Any]]:
        """Every artifact of a run by name (listArtifacts, following continuation tokens)."""
        out: dict[str, dict[str, Any]] = {}
        query: dict[str, Any] = {}
        while True:
            page = self.queue.listArtifacts(task_id, str(run_id), query=query)
            for art in page["artifacts"]:
                out[art["name"]] = art
            if not page.get("continuationToken"):
                return out
            query = {"continuationToken": page["continuationToken"]}

    def download(self, task_id: str, run_id: int, name: str) -> tuple[bytes, str]:
        """Artifact bytes as the official download helper delivers them (content-decoded)."""
        buf, content_type = downloadArtifactToBuf(
            taskId=task_id, runId=run_id, name=name, queueService=self.queue
        )
        return bytes(buf), content_type

    def log(self, task_id: str, run_id: int = 0, name: str = "public/logs/live_backing.log") -> str:
        data, _ = self.download(task_id, run_id, name)
        assert not data.startswith(b"\x1f\x8b"), (
            f"{name} reached the client still gzip-compressed: the Content-Encoding was lost on the way"
        )
        return data.decode("utf-8", "replace")

    def explain(self, task_id: str, run_id: int = 0) -> str:
        """The run's task log (tail) for assertion messages; never raises."""
        try:
            return "\n--- task log (tail) ---\n" + self.log(task_id, run_id)[-4000:]
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"\n--- task log unavailable: {exc!r} ---"

    def raw_artifact(self, task_id: str, run_id: int, name: str) -> tuple[str, bytes]:
        """(Content-Encoding, bytes exactly as served) — bypasses the client's transparent decoding."""
        art = self.queue.artifact(task_id, str(run_id), name)
        if art["storageType"] == "object":
            obj = taskcluster.Object({"rootUrl": self.root_url, "credentials": art["credentials"]})
            res = obj.startDownload(art["name"], {"acceptDownloadMethods": {"getUrl": True}})
            url = res["url"]
        elif art["storageType"] in ("s3", "reference"):
            url = art["url"]
        else:
            raise AssertionError(f"artifact {name} has storage type {art['storageType']}: {art}")
        resp = requests.get(url, stream=True, timeout=30, headers={"Accept-Encoding": "gzip"})
        resp.raise_for_status()
        raw = resp.raw.read(decode_content=False)
        return resp.headers.get("Content-Encoding", "identity"), raw


def decoded(encoding: str, raw: bytes) -> bytes:
    return gzip.decompress(raw) if encoding == "gzip" else raw


_LINE = re.compile(
    r"^\[taskcluster(?::warn)? \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] |^\[taskcluster:error\] "
)


def worker_lines(log: str) -> list[str]:
    """The lines the worker wrote (GW prefixes), as opposed to task output."""
    return [line for line in log.splitlines() if _LINE.match(line)]
