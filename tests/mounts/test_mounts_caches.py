"""Writable caches: persistence across tasks and restarts, capacity 2, purge requests, aborted runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import taskcluster

SCOPES = ["generic-worker:cache:*"]


def _cache_task(submitter, script: str, name: str = "shared", **payload) -> str:
    return submitter.create(
        {
            "command": [["/bin/sh", "-c", script]],
            "maxRunTime": payload.pop("maxRunTime", 60),
            "mounts": [{"directory": "cache", "cacheName": name}],
            **payload,
        },
        scopes=SCOPES,
    )


def test_cache_written_by_one_task_is_read_by_the_next_and_survives_a_restart(
    start_worker, submitter, tmp_path
) -> None:
    workdir = tmp_path / "w"
    worker = start_worker(workdir=workdir)
    first = _cache_task(submitter, "echo one > cache/data")
    assert submitter.wait_run(first, worker=worker)["state"] == "completed"
    second = _cache_task(submitter, "cat cache/data && echo two >> cache/data")
    assert submitter.wait_run(second, worker=worker)["state"] == "completed"
    assert "one" in submitter.log(second)
    worker.stop()
    worker = start_worker(workdir=workdir)
    third = _cache_task(submitter, "tr '\\n' + < cache/data; echo")
    assert submitter.wait_run(third, worker=worker)["state"] == "completed"
    assert "one+two+" in submitter.log(third)


def test_capacity_two_never_shares_a_cache_and_purge_waits_for_release(
    start_worker, submitter, shared_platform
) -> None:
    worker = start_worker(capacity=2)
    script = 'ls cache; echo "$TASK_ID" > cache/owner; sleep 4; echo "SAW:$(cat cache/owner)"'
    a = _cache_task(submitter, script)
    b = _cache_task(submitter, script)
    submitter.wait_running(a, worker=worker)
    submitter.wait_running(b, worker=worker)
    # While both hold an instance, ask the purge-cache service to drop the cache.
    time.sleep(1.5)
    purge = taskcluster.PurgeCache(
        {
            "rootUrl": shared_platform.root_url,
            "credentials": {
                "clientId": "static/taskcluster/root",
                "accessToken": shared_platform.root_access_token,
            },
        }
    )
    purge.purgeCache(f"e2e-prov/{submitter.worker_type}", {"cacheName": "shared"})
    for task_id in (a, b):
        run = submitter.wait_run(task_id, worker=worker)
        log = submitter.log(task_id)
        assert run["state"] == "completed", log
        assert f"SAW:{task_id}" in log, "two running tasks shared one cache directory"
    # The next task polls purge requests: both instances (created before the request) are gone.
    c = _cache_task(submitter, "ls -A cache | wc -l")
    run = submitter.wait_run(c, worker=worker)
    log = submitter.log(c)
    assert run["state"] == "completed", log
    assert "Creating new writable directory cache" in log
    index = json.loads((Path(worker.config["cachesDir"]) / "caches.json").read_text())
    assert len(index["instances"]) == 1, index


def test_aborted_or_purge_exit_code_runs_do_not_keep_their_cache(start_worker, submitter) -> None:
    worker = start_worker()
    seed = _cache_task(submitter, "echo seed > cache/data")
    assert submitter.wait_run(seed, worker=worker)["state"] == "completed"
    aborted = _cache_task(submitter, "echo poisoned > cache/data; sleep 30", maxRunTime=3)
    run = submitter.wait_run(aborted, worker=worker)
    log = submitter.log(aborted)
    assert run["state"] == "failed", log
    assert "Purging caches since the task was aborted" in log
    after = _cache_task(submitter, "ls -A cache | wc -l; exit 123", onExitStatus={"purgeCaches": [123]})
    run = submitter.wait_run(after, worker=worker)
    log = submitter.log(after)
    assert run["state"] == "failed", log
    assert "Creating new writable directory cache" in log
    assert "Removing cache shared from cache table" in log and "Deleting cache shared file(s) at" in log
    assert "Preserving cache" not in log
    last = _cache_task(submitter, "ls -A cache | wc -l")
    assert submitter.wait_run(last, worker=worker)["state"] == "completed"
    assert "Creating new writable directory cache" in submitter.log(last)
    assert not [p for p in (Path(worker.config["cachesDir"]) / "generic-worker").rglob("data")]
