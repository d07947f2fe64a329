"""Run the local Taskcluster platform (`tcworker queue serve`) as a real child process for tests.

Tests must talk to the platform the way a worker or a submitter does: over HTTP, through the
official `taskcluster` client, against a separate process that can be killed with SIGKILL and
restarted on the same data directory. `PlatformProcess` owns one such process; the pytest
fixtures in `tests/conftest.py` build on it, and other test areas (worker end-to-end tests) reuse it.

Why a separate process and not an in-thread server: `kill -9` and restart are part of what is
tested, and a server sharing the test's interpreter could hide blocking calls on the event loop.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import taskcluster
import yaml

from helpers.ci import child_preexec

ROOT_CLIENT_ID = "static/taskcluster/root"
_ROOT_URL_LINE = re.compile(r"rootUrl:\s*(http://127\.0\.0\.1:(\d+))")


class PlatformStartError(RuntimeError):
    """The server did not print its rootUrl in time or exited first; the message carries its output."""


class PlatformProcess:
    """One `python -m tcworker queue serve` child process bound to 127.0.0.1.

    The first `start()` binds port 0 (or `port`) and remembers the port the server reports, so
    `restart()` comes back on the same rootUrl and data directory. Use as a context manager or
    call `stop()`; the fixtures do that for you.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        root_access_token: str | None = None,
        claim_timeout: float | None = None,
        clients: list[dict[str, Any]] | None = None,
        roles: list[dict[str, Any]] | None = None,
        port: int = 0,
        extra_args: list[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A leading "-" would make argparse read the token as an option: start with a letter.
        self.root_access_token = root_access_token or "t" + secrets.token_urlsafe(32)
        self.claim_timeout = claim_timeout
        self.port = port
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.clients_file: Path | None = None
        if clients or roles:
            # Kept beside (not inside) the data dir so the server owns its data dir alone.
            self.clients_file = self.data_dir.parent / f"{self.data_dir.name}-clients.yml"
            doc: dict[str, Any] = {"clients": list(clients or [])}
            if roles:
                doc["roles"] = list(roles)
            self.clients_file.write_text(yaml.safe_dump(doc))
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.root_url = ""
        self.starts = 0

    # -- process control ------------------------------------------------------------------

    def command(self) -> list[str]:
        """The exact command line (the fixed interface of issue 2)."""
        cmd = [
            sys.executable,
            "-m",
            "tcworker",
            "queue",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data_dir),
            "--root-access-token",
            self.root_access_token,
        ]
        if self.claim_timeout is not None:
            cmd += ["--claim-timeout", str(self.claim_timeout)]
        if self.clients_file is not None:
            cmd += ["--clients", str(self.clients_file)]
        return cmd + self.extra_args

    def start(self) -> PlatformProcess:
        """Spawn the server and wait until it prints `rootUrl: http://127.0.0.1:PORT`."""
        if self.running:
            raise RuntimeError("platform already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        offset = log.tell()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # PDEATHSIG is tied to the spawning *thread*; only safe from the main thread.
                preexec_fn=child_preexec(),
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = _ROOT_URL_LINE.search(self._read_log(offset))
            if match:
                self.root_url = match.group(1)
                self.port = int(match.group(2))
                return self
            if self.proc.poll() is not None:
                raise PlatformStartError(
                    f"platform exited with {self.proc.returncode} before printing rootUrl:\n"
                    + self._read_log(offset)
                )
            time.sleep(0.02)
        self.kill9()
        raise PlatformStartError(f"no rootUrl line within {self.start_timeout}s:\n" + self._read_log(offset))

    def kill9(self) -> None:
        """SIGKILL the server (no chance to flush or clean up) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def restart(self, *, kill: bool = False) -> PlatformProcess:
        """Stop (gracefully, or with SIGKILL) and start again on the same port and data dir."""
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> str:
        """Everything the server printed so far (all starts), for assertion messages."""
        return self._read_log(0)

    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> PlatformProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients --------------------------------------------------------------------------

    @property
    def root_credentials(self) -> dict[str, str]:
        return {"clientId": ROOT_CLIENT_ID, "accessToken": self.root_access_token}

    def options(self, credentials: dict[str, str] | None | bool = True, **extra: Any) -> dict[str, Any]:
        """Client options for this deployment: `credentials=True` → root, `None`/`False` → anonymous."""
        opts: dict[str, Any] = {"rootUrl": self.root_url}
        if credentials is True:
            opts["credentials"] = self.root_credentials
        elif credentials:
            opts["credentials"] = credentials
        opts.update(extra)
        return opts

    def client(self, cls: type[Any], credentials: dict[str, str] | None | bool = True, **extra: Any) -> Any:
        """Any official client class (sync `taskcluster.Queue`, or `taskcluster.aio.Queue`, ...)."""
        return cls(self.options(credentials, **extra))

    def queue(self, credentials: dict[str, str] | None | bool = True, **extra: Any) -> taskcluster.Queue:
        """Sync official Queue client, root credentials by default."""
        return taskcluster.Queue(self.options(credentials, **extra))
