"""Helpers for the docker feature tests: a real GnuPG key pair made by gpg, and encryption with gpg.

The key is made by ``/usr/bin/gpg`` in a throw-away GNUPGHOME (short path under /tmp: the agent's
socket path must fit in 108 bytes), exported ASCII-armored for the worker, and the agent is stopped
at teardown. Messages are made with the real ``gpg --encrypt`` so interoperability is what is tested.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slugid
import taskcluster

GPG = shutil.which("gpg") or "/usr/bin/gpg"


@dataclass
class GpgKey:
    home: Path
    uid: str
    fingerprint: str
    secret_key_file: Path  # ASCII-armored secret key: the worker's openpgpPrivateKeyLocation
    public_key_file: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(
            [GPG, "--batch", "--quiet", "--no-tty", *args],
            input=input,
            capture_output=True,
            env=self.env(),
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def encrypt(self, plaintext: bytes, *, armor: bool = False) -> bytes:
        extra = ["--armor"] if armor else []
        return self.gpg(
            "--trust-model", "always", *extra, "--encrypt", "--recipient", self.fingerprint, input=plaintext
        )

    def message(self, doc: dict[str, Any], *, armor: bool = False) -> str:
        """An encryptedEnv element: base64 of the gpg-encrypted JSON document."""
        return base64.b64encode(self.encrypt(json.dumps(doc).encode(), armor=armor)).decode()


def make_gpg_key(algo: str = "future-default") -> Iterator[GpgKey]:
    if not Path(GPG).exists():
        reason = "gpg is not installed (apt-get install gnupg)"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="tcwgpg", dir="/tmp"))
    home.chmod(0o700)
    uid = f"tcworker test {home.name} <worker@example.invalid>"
    key = GpgKey(home, uid, "", home / "worker-secret.asc", home / "worker-public.asc")
    try:
        key.gpg("--passphrase", "", "--quick-gen-key", uid, algo, "default", "never")
        listing = key.gpg("--with-colons", "--list-secret-keys", uid).decode()
        key.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        if algo not in ("default", "future-default"):  # an explicit algorithm makes a sign-only primary
            key.gpg("--passphrase", "", "--quick-add-key", key.fingerprint, algo, "encr", "never")
        key.secret_key_file.write_bytes(key.gpg("--armor", "--export-secret-keys", key.fingerprint))
        key.public_key_file.write_bytes(key.gpg("--armor", "--export", key.fingerprint))
        yield key
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=key.env(), capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


# ---- superseding -----------------------------------------------------------------------------


class RecordingLog:
    """A task log for tests: keeps every line with its level (implements TaskLogWriter)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, data: bytes) -> None:
        self.lines.append(("raw", data.decode(errors="replace")))

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warn(self, message: str) -> None:
        self.lines.append(("warn", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def text(self) -> str:
        return "\n".join(f"{level}: {msg}" for level, msg in self.lines)


class Superseder:
    """A superseder service on 127.0.0.1: ``GET /<key>?taskId=…`` answers ``{"supersedes": lists[key]}``.

    Special keys give the failure modes: ``status500``, ``notjson``, ``nolist``, ``slow`` (sleeps
    ``slow_seconds``), ``raw`` (answers ``raw_body`` verbatim). Every request's query is recorded.
    """

    def __init__(self) -> None:
        self.lists: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.raw_body = b""
        self.slow_seconds = 2.0
        self._runner: Any = None
        self.base_url = ""

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        key = request.match_info["key"]
        self.requests.append((key, dict(request.query)))
        if key == "status500":
            return web.Response(status=500, text="boom")
        if key == "notjson":
            return web.Response(text="<html>not json</html>")
        if key == "nolist":
            return web.json_response({"supersedes": "nope"})
        if key == "slow":
            await asyncio.sleep(self.slow_seconds)
            return web.json_response({"supersedes": []})
        if key == "raw":
            return web.Response(body=self.raw_body, content_type="application/json")
        return web.json_response({"supersedes": self.lists.get(key, [])})

    async def start(self) -> Superseder:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{key}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key}"


WORKER_GROUP = "tcw-sup-wg"
WORKER = {"clientId": "tcw-test/docker-worker", "accessToken": "docker-worker-token-0123456789abcdefghijkl"}
# What a real worker holds: claim, identify itself, expand roles; nothing else (in particular no cancel-task).
WORKER_SCOPES = [
    "queue:claim-work:tcw-sup/*",
    "queue:claim-task:tcw-sup/*",
    f"queue:worker-id:{WORKER_GROUP}/*",
    "auth:expand-scopes",
]


def new_queue_id() -> str:
    return f"tcw-sup/q{slugid.nice().lower().replace('_', '').replace('-', '')[:18]}"


def task_def(queue_id: str, payload: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "taskQueueId": queue_id,
        "created": taskcluster.stringDate(now),
        "deadline": taskcluster.stringDate(now + dt.timedelta(hours=1)),
        "expires": taskcluster.stringDate(now + dt.timedelta(days=1)),
        "payload": payload,
        "metadata": {
            "name": "superseding test",
            "description": "created by tests/docker_features",
            "owner": "tests@example.com",
            "source": "https://example.com/tcworker/tests",
        },
    }
    body.update(overrides)
    return body


class RejectSupersededProxy:
    """An HTTP proxy in front of the platform that answers like the real queue since Taskcluster v40:
    ``reportException`` with reason ``superseded`` → 400. Everything else is forwarded unchanged
    (Host header included, so Hawk signatures made for the proxy's address still verify)."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.rejected: list[str] = []
        self._runner: Any = None
        self.root_url = ""

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web

        body = await request.read()
        if request.method == "POST" and request.path.endswith("/exception"):
            try:
                reason = json.loads(body).get("reason")
            except ValueError:
                reason = None
            if reason == "superseded":
                self.rejected.append(request.path)
                return web.json_response(
                    {
                        "code": "InputValidationError",
                        "message": "Schema Validation Failed: reason must be equal to one of the allowed values",
                        "requestInfo": {"method": "reportException"},
                    },
                    status=400,
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP - {"host"}}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                # Hawk signs the content type: add none that the client did not send.
                skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
            ) as resp,
        ):
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in self.HOP}
            return web.Response(status=resp.status, body=data, headers=out)

    async def start(self) -> RejectSupersededProxy:
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.root_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
