"""Where the task page reads a log from, for each kind of live.log artifact (tcworker/platform/inspector/logsource.py).

The platform now refuses non-http(s) reference URLs itself, but a store filled by an older version
(or a real deployment's data) may hold one: the page must still never hand it to the browser.
"""

from __future__ import annotations

from tcworker.platform.inspector.logsource import LIVE_LOG, live_log_name, log_source
from tcworker.platform.queue.artifacts import Artifact


def art(name: str, kind: str, present: bool = True, **details: str) -> Artifact:
    return Artifact("TASK", 0, name, kind, "text/plain", 0, present, details)


def test_each_artifact_kind_gives_its_log_source() -> None:
    backing = art("public/logs/live_backing.log", "object")
    cases = {
        "stream": {LIVE_LOG: art(LIVE_LOG, "reference", url="http://10.0.0.5:60099/log/abc")},
        "static": {LIVE_LOG: art(LIVE_LOG, "link", artifact=backing.name), backing.name: backing},
    }
    for kind, arts in cases.items():
        assert log_source("TASK", 0, LIVE_LOG, arts).kind == kind
    stream = log_source("TASK", 0, LIVE_LOG, cases["stream"])
    assert stream.url == "http://10.0.0.5:60099/log/abc"
    static = log_source("TASK", 0, LIVE_LOG, cases["static"])
    assert static.url == "/api/queue/v1/task/TASK/runs/0/artifacts/public%2Flogs%2Flive.log"

    for arts in (
        {},
        {LIVE_LOG: art(LIVE_LOG, "reference", url="javascript:alert(1)")},
        {LIVE_LOG: art(LIVE_LOG, "reference", url="data:text/html,<script>")},
        {LIVE_LOG: art(LIVE_LOG, "error", reason="file-missing-on-worker", message="gone")},
        {LIVE_LOG: art(LIVE_LOG, "object", present=False)},
        {
            LIVE_LOG: art(LIVE_LOG, "link", artifact=backing.name),
            backing.name: art(backing.name, "object", False),
        },
    ):
        source = log_source("TASK", 0, LIVE_LOG, arts)
        assert (source.kind, source.url) == ("none", ""), arts


def test_live_log_name_follows_the_payload() -> None:
    assert live_log_name({"payload": {"command": []}}) == LIVE_LOG
    assert live_log_name({"payload": {"logs": {"live": "private/live.log"}}}) == "private/live.log"
    assert live_log_name({"payload": {"image": "x", "log": "public/docker.log"}}) == "public/docker.log"
    assert live_log_name({"payload": {"logs": {"live": 5}}}) == LIVE_LOG
