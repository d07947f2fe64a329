"""`start_platform` embedded in the test's own event loop (how `tcworker local` uses it) and the CLI."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import slugid
import taskcluster.aio
from helpers.tasks import task_def

from tcworker.platform.serve import start_platform


async def test_waiting_claim_work_is_notified_and_stop_releases_pollers(tmp_path: Path) -> None:
    platform = await start_platform(data_dir=tmp_path / "data", claim_timeout=30)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", platform.root_url)
        queue = taskcluster.aio.Queue(
            {"rootUrl": platform.root_url, "credentials": platform.root_credentials}
        )
        body = {"workerGroup": "wg", "workerId": "w1"}
        waiting = asyncio.create_task(queue.claimWork("emb/notify", body))
        await asyncio.sleep(0.3)
        task_id = slugid.nice()
        created = time.monotonic()
        await queue.createTask(task_id, task_def("emb/notify"))
        claims = (await asyncio.wait_for(waiting, 5))["tasks"]
        assert [c["status"]["taskId"] for c in claims] == [task_id]
        assert time.monotonic() - created < 0.5  # notified, not polled

        idle = asyncio.create_task(queue.claimWork("emb/idle", body))
        await asyncio.sleep(0.3)
        started = time.monotonic()
    finally:
        await platform.stop()
    assert (await asyncio.wait_for(idle, 5)) == {"tasks": []}
    assert time.monotonic() - started < 5


def test_cli_generates_keeps_and_reuses_the_root_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "tcworker",
        "queue",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data),
    ]
    tokens = []
    for _ in range(2):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            first, second = proc.stdout.readline(), proc.stdout.readline()
            assert re.fullmatch(r"rootUrl: http://127\.0\.0\.1:\d+\n", first)
            tokens.append(second.removeprefix("root accessToken: ").strip())
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
    assert tokens[0] and tokens[0] == tokens[1]
    token_file = data / "root-access-token"
    assert token_file.read_text().strip() == tokens[0]
    assert os.stat(token_file).st_mode & 0o777 == 0o600
