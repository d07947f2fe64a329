"""Issue 9 acceptance 2 (second half): the live log of a docker-worker payload (`localLiveLog`).

A real `tcworker run` with `engine: docker` runs a busybox container; its output is read live
through the queue's redirect, and `features.localLiveLog: false` turns the live log off.
"""

from __future__ import annotations

from typing import Any

import pytest
import taskcluster
from helpers.polling import wait_for
from helpers.submitter import Submitter
from livehelpers import LiveReader, live_url_of, numbered_lines

pytestmark = pytest.mark.docker

LINES = 10
TICKER = f'i=0; while [ $i -lt {LINES} ]; do echo "line $i $(date +%s).000000"; i=$((i+1)); sleep 0.3; done'


def _reference(submitter: Submitter, task_id: str) -> str:
    def ready() -> str | None:
        try:
            answer = submitter.queue.artifact(task_id, "0", "public/logs/live.log")
        except taskcluster.TaskclusterRestFailure:
            return None
        return str(answer["url"]) if answer.get("storageType") == "reference" else None

    return str(wait_for(ready, 90, "the docker task's live.log reference"))


def test_docker_payload_live_log(submitter: Submitter, start_worker: Any, docker_image: str) -> None:
    worker = start_worker(engine="docker", dockerImage=docker_image)
    task_id = submitter.create(
        {"image": docker_image, "command": ["sh", "-c", TICKER], "maxRunTime": 120}, mark=False
    )
    live = _reference(submitter, task_id)
    reader = LiveReader(live_url_of(taskcluster.Queue({"rootUrl": submitter.root_url}), task_id))
    reader.start()
    reader.join(120)
    run = submitter.wait_run(task_id, worker=worker, timeout=120)
    assert run["state"] == "completed", submitter.explain(task_id)
    assert reader.error is None and reader.ended and reader.final_url and reader.final_url.startswith(live)
    # docker-worker's TTY output ends lines with \r\n
    assert numbered_lines(reader.data.replace(b"\r\n", b"\n")) == list(range(LINES))
    arts = submitter.artifacts(task_id, 0)
    assert arts["public/logs/live.log"]["storageType"] == "link", arts
    backing, _ = submitter.download(task_id, 0, "public/logs/live_backing.log")
    assert backing == reader.data


def test_docker_local_live_log_false(submitter: Submitter, start_worker: Any, docker_image: str) -> None:
    worker = start_worker(engine="docker", dockerImage=docker_image)
    task_id = submitter.create(
        {
            "image": docker_image,
            "command": ["sh", "-c", "echo quiet"],
            "maxRunTime": 60,
            "features": {"localLiveLog": False},
        },
        mark=False,
    )
    run = submitter.wait_run(task_id, worker=worker, timeout=120)
    assert run["state"] == "completed", submitter.explain(task_id)
    arts = submitter.artifacts(task_id, 0)
    assert "public/logs/live.log" not in arts and "public/logs/live_backing.log" in arts, sorted(arts)
