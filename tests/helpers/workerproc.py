"""Start a real `tcworker run` process against a platform process, the way a deployment would.

`WorkerProcess` owns one `python -m tcworker run --config FILE` child with a generic-worker config
file (`worker_config`: tight, test-friendly settings) and its combined output; `start_worker_process`
is the one place tests start a worker (own work dir, signing key made by the real CLI, config
overrides on top). Workers inherit the test's environment minus TASKCLUSTER_* (`clean_env`), which
the worker would read as config overrides.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slugid

from helpers.ci import child_preexec
from helpers.platformproc import PlatformProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVISIONER_ID = "e2e-prov"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without TASKCLUSTER_* (the worker reads those as config overrides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def tcworker_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tcworker", *args]


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m tcworker ARGS` to its end, output captured as text, in the clean environment."""
    return subprocess.run(
        tcworker_cmd(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
    )


def new_signing_key(path: Path) -> Path:
    """`tcworker new-ed25519-keypair --file F` (the real CLI), mode 0600 as multiuser demands."""
    result = run_cli("new-ed25519-keypair", "--file", str(path), cwd=path.parent)
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
                preexec_fn=child_preexec(),
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


def start_worker_process(
    platform: PlatformProcess,
    workdir: Path,
    *,
    key: Path | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> WorkerProcess:
    """Start `tcworker run` on `platform` in `workdir` (made if missing) with root credentials.

    `overrides` are generic-worker config keys (`workerType=`, `engine=`, `capacity=` …); `key` is
    the ed25519 signing key (made with `tcworker new-ed25519-keypair` in `workdir` when None);
    `env` adds environment variables to the clean environment.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    key = key or new_signing_key(workdir / "ed25519.key")
    config = worker_config(platform.root_url, platform.root_access_token, workdir, key, **overrides)
    return WorkerProcess(workdir, config, clean_env(**(env or {}))).start()
