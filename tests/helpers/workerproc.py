"""Drive a real `tcworker run` process against a real platform process, as a submitter would.

The end-to-end tests need three things that the shared platform fixtures (`tests/platformproc.py`)
do not give: a worker child process with a generic-worker config file (`WorkerProcess`), tasks
submitted and awaited through the official `taskcluster` client (`Submitter`), and a way to find
every OS process a task left behind, however it detached (`marked_processes`: each task gets a
unique `E2E_MARK` variable in its payload env and every descendant inherits it, even across
`setsid` or a double fork, so a scan of `/proc/*/environ` finds them all).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gzip
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
import slugid
import taskcluster
from taskcluster.download import downloadArtifactToBuf

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVISIONER_ID = "e2e-prov"
RESOLVED_STATES = ("completed", "failed", "exception")
MARK_VAR = "E2E_MARK"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL the child if the test runner dies, so a crashed run leaves no worker behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without TASKCLUSTER_* (the worker reads those as config overrides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tcworker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tcworker", *args]


def new_signing_key(path: Path) -> Path:
    """`tcworker new-ed25519-keypair --file F` (the real CLI), mode 0600 as multiuser demands."""
    result = subprocess.run(
        tcworker_cmd("new-ed25519-keypair", "--file", str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=path.parent,
    )
    assert result.returncode == 0, f"new-ed25519-keypair failed ({result.returncode}): {result.stderr}"
    assert path.exists(), "new-ed25519-keypair wrote no key file"
    path.chmod(0o600)
    return path


def unique_worker_type() -> str:
    """A task queue of its own per test, so tests sharing one platform never see each other's tasks."""
    return "e2e-" + secrets.token_hex(10)  # queue pattern: ^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$


@dataclass
class WorkerProcess:
    """One `python -m tcworker run --config FILE` child, its config and its combined output."""

    workdir: Path
    config: dict[str, Any]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_path: Path = field(init=False)
    config_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "worker-output.log"
        self.config_path = self.workdir / "worker-config.json"

    @property
    def worker_id(self) -> str:
        return str(self.config["workerId"])

    def start(self) -> WorkerProcess:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(
                tcworker_cmd("run", "--config", str(self.config_path)),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        finally:
            log.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Exit code; fails the test (with the worker's output) if it is still running."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.worker_id} still running after {timeout}s:\n{self.tail()}"
            ) from None

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: used at teardown whatever state the test left it in."""
        if not self.running:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def output(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 6000) -> str:
        return self.output()[-chars:]


def worker_config(
    root_url: str, access_token: str, workdir: Path, key: Path, **overrides: Any
) -> dict[str, Any]:
    """A generic-worker config with tight, test-friendly settings; `overrides` win."""
    config: dict[str, Any] = {
        "rootURL": root_url,
        "clientId": "static/taskcluster/root",
        "accessToken": access_token,
        "provisionerId": PROVISIONER_ID,
        "workerType": "e2e-unset",
        "workerGroup": "e2e-group",
        "workerId": "w-" + slugid.nice()[:12].replace("_", "x"),
        "tasksDir": str(workdir / "tasks"),
        "cachesDir": str(workdir / "caches"),
        "downloadsDir": str(workdir / "downloads"),
        "ed25519SigningKeyLocation": str(key),
        "requiredDiskSpaceMegabytes": 1,
        "engine": "simple",
        "capacity": 1,
    }
    config.update(overrides)
    return config


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


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries E2E_MARK=<mark>."""
    needle = f"{MARK_VAR}={mark}".encode()
    found: list[psutil.Process] = []
    for pid in psutil.pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"pid={p.pid} ppid={p.ppid()} sid={os.getsid(p.pid)} cmd={p.cmdline()}")
    return "\n".join(lines)


def wait_for_marked(mark: str, *, present: bool, timeout: float) -> list[psutil.Process]:
    """Wait until marked processes exist (present=True) or are all gone (present=False)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = marked_processes(mark)
        if bool(procs) == present or time.monotonic() >= deadline:
            return procs
        time.sleep(0.05)


def kill_marked(mark: str) -> None:
    """Teardown safety net: SIGKILL whatever a task left (the assertions have already run)."""
    for p in marked_processes(mark):
        with contextlib.suppress(psutil.Error):
            p.kill()


_LINE = re.compile(
    r"^\[taskcluster(?::warn)? \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] |^\[taskcluster:error\] "
)


def worker_lines(log: str) -> list[str]:
    """The lines the worker wrote (GW prefixes), as opposed to task output."""
    return [line for line in log.splitlines() if _LINE.match(line)]
