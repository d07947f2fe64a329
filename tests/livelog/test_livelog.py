"""Issue 9 acceptance 1 (and the live-log wire rules): a running task's log read live over HTTP.

A real platform process and a real `tcworker run` process; the task prints a numbered, timestamped
line every 0.2 s for 10 s. Readers reach the live log the way users do: through the queue's
`getArtifact` URL built by the official client, which answers 303 to the worker's live-log URL.
"""

from __future__ import annotations

from typing import Any

import requests
import taskcluster
from helpers.polling import wait_for
from helpers.submitter import Submitter
from livehelpers import LiveReader, live_url_of, numbered_lines

LINES = 50  # one every 0.2 s: 10 s
TICKER = f'for k in $(seq 0 {LINES - 1}); do echo "line $k $(date +%s.%N)"; sleep 0.2; done'


def _reference(submitter: Submitter, task_id: str, name: str = "public/logs/live.log") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        try:
            answer = dict(submitter.queue.artifact(task_id, "0", name))
        except taskcluster.TaskclusterRestFailure:
            return None
        return answer if answer.get("storageType") == "reference" else None

    return dict(wait_for(ready, 60, f"{name} to become a reference artifact"))


def test_live_log_is_streamed_resumed_and_linked_at_the_end(submitter: Submitter, start_worker: Any) -> None:
    worker = start_worker()
    task_id = submitter.create({"command": [["sh", "-c", TICKER]], "maxRunTime": 120})
    reference = _reference(submitter, task_id)
    live = str(reference["url"])
    assert live.startswith("http://127.0.0.1:") and "/log/" in live

    # While the task runs, the backing log is not listed (its artifact is created once complete).
    names = set(submitter.artifacts(task_id, 0))
    assert "public/logs/live_backing.log" not in names and "public/logs/live.log" in names

    # Reader 1: through the queue's redirect, built by the official (anonymous) client.
    anonymous = taskcluster.Queue({"rootUrl": submitter.root_url})
    first = LiveReader(live_url_of(anonymous, task_id))
    first.start()
    # Reader 2: reads ~3 s, disconnects, then resumes with ?offset=<bytes it has>.
    second = LiveReader(live, stop_after=3.0)
    second.start()
    second.join(30)
    assert second.error is None and second.status == 200, (second.status, second.error)
    resumed = LiveReader(live, params={"offset": str(len(second.data))})
    resumed.start()

    first.join(60)
    resumed.join(60)
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
    assert first.error is None and first.ended, first.error
    assert first.final_url is not None and first.final_url.startswith(live)  # followed the 303
    assert first.response_headers["Content-Type"] == "text/plain; charset=utf-8"
    assert first.response_headers["Access-Control-Allow-Origin"] == "*"
    assert first.response_headers.get("Transfer-Encoding") == "chunked"

    # Line k reached the reader within 1 s of the task printing it.
    arrivals = first.line_arrivals()
    assert sorted(arrivals) == list(range(LINES)), sorted(arrivals)
    late = {k: round(got - printed, 3) for k, (printed, got) in arrivals.items() if got - printed > 1.0}
    assert not late, f"lines later than 1 s: {late}"

    # The reconnecting reader got every line exactly once.
    both = second.data + resumed.data
    assert resumed.ended and numbered_lines(both) == list(range(LINES))
    assert both == first.data

    # At the end live.log is a link to the backing log, whose bytes are what the readers saw.
    arts = submitter.artifacts(task_id, 0)
    assert arts["public/logs/live.log"]["storageType"] == "link", arts
    backing, _ = submitter.download(task_id, 0, "public/logs/live_backing.log")
    assert backing == first.data
    via_link, _ = submitter.download(task_id, 0, "public/logs/live.log")
    assert via_link == backing

    # A reader arriving after the end (within the retention) gets everything and EOF.
    late_reader = LiveReader(live)
    late_reader.run()
    assert late_reader.ended and late_reader.data == backing

    # Range: bytes=N- resumes too (206); a wrong token is refused.
    ranged = requests.get(live, headers={"Range": "bytes=100-"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == backing[100:]
    assert ranged.headers["Content-Range"] == f"bytes 100-{len(backing) - 1}/{len(backing)}"
    wrong = requests.get(live.rsplit("/", 1)[0] + "/not-the-token", timeout=30)
    assert wrong.status_code == 401


def test_enable_live_log_false_means_no_live_log(submitter: Submitter, start_worker: Any) -> None:
    worker = start_worker(enableLiveLog=False)
    task_id = submitter.create({"command": [["sh", "-c", "echo hello"]], "maxRunTime": 60})
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
    arts = submitter.artifacts(task_id, 0)
    assert "public/logs/live.log" not in arts and "public/logs/live_backing.log" in arts, sorted(arts)
    assert "hello" in submitter.log(task_id)


def test_several_readers_of_a_short_task_and_custom_names(submitter: Submitter, start_worker: Any) -> None:
    worker = start_worker()
    payload = {
        "command": [["sh", "-c", "echo start; sleep 2; echo end"]],
        "maxRunTime": 60,
        "logs": {"live": "public/custom/live.log", "backing": "public/custom/backing.log"},
    }
    task_id = submitter.create(payload)
    live = str(_reference(submitter, task_id, "public/custom/live.log")["url"])
    readers = [LiveReader(live) for _ in range(5)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
    backing = submitter.log(task_id, name="public/custom/backing.log").encode()
    assert all(r.ended and r.data == backing for r in readers)
    arts = submitter.artifacts(task_id, 0)
    assert arts["public/custom/live.log"]["storageType"] == "link"
    assert b"start" in backing and b"end" in backing
