"""HTTP-level tests of the inspector pages served by `tcworker queue serve`.

A real platform process; tasks, claims and artifacts are made with the official client (and, for
the log test, a real worker), then the pages are fetched over HTTP as a browser would.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

import requests
import slugid
import taskcluster
import taskcluster.exceptions
from helpers.inspector import PROVISIONER, definition, get_page
from helpers.platformproc import PlatformProcess
from helpers.submitter import Submitter, iso
from helpers.workerproc import WorkerProcess

TASK_ROW = re.compile(r'<tr data-task-id="([^"]+)">')


def rows(page: str) -> list[str]:
    return TASK_ROW.findall(page)


def older_link(page: str) -> str | None:
    match = re.search(r'<a class="older" href="([^"]+)">', page)
    return html.unescape(match.group(1)) if match else None


def log_source(page: str) -> dict[str, str]:
    match = re.search(r'<div id="log-source" ([^>]*)>', page)
    assert match, "the task page has no log-source element"
    return {k: html.unescape(v) for k, v in re.findall(r'data-([a-z]+)="([^"]*)"', match.group(1))}


def claim(queue: taskcluster.Queue, worker_type: str, worker_id: str = "w1") -> dict[str, Any]:
    answer = queue.claimWork(
        f"{PROVISIONER}/{worker_type}", {"workerGroup": "inspector-group", "workerId": worker_id, "tasks": 1}
    )
    assert answer["tasks"], "claimWork handed out no task"
    return dict(answer["tasks"][0])


def in_a_day() -> str:
    return iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=12))


def test_list_is_newest_first_and_paginated(iplatform: PlatformProcess) -> None:
    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    group = slugid.nice()
    created = []
    for i in range(55):
        task_id = slugid.nice()
        queue.createTask(task_id, definition(worker_type, group=group, name=f"paged task {i}"))
        created.append(task_id)
    newest_first = created[::-1]

    front = get_page(iplatform.root_url, "/")
    assert front.status_code == 200 and front.headers["Content-Type"].startswith("text/html")
    assert rows(front.text)[:50] == newest_first[:50]
    assert "paged task 54" in front.text and f'href="/groups/{group}"' in front.text
    older = older_link(front.text)
    assert older is not None and older.startswith("/?before=")
    second = get_page(iplatform.root_url, older)
    assert rows(second.text)[:5] == newest_first[50:55], "the second page continues where the first ended"

    group_page = get_page(iplatform.root_url, f"/groups/{group}")
    assert group_page.status_code == 200
    assert rows(group_page.text) == newest_first[:50]
    assert "55 tasks" in group_page.text and 'state-pending">pending</span> 55' in group_page.text
    group_older = older_link(group_page.text)
    assert group_older is not None
    rest = get_page(iplatform.root_url, group_older)
    assert rows(rest.text) == newest_first[50:], "the group's last page holds exactly the 5 oldest tasks"
    assert older_link(rest.text) is None

    late = slugid.nice()
    queue.createTask(late, definition(worker_type, group=group, name="latest"))
    assert rows(get_page(iplatform.root_url, "/").text)[0] == late


def test_task_page_shows_definition_runs_and_artifacts(iplatform: PlatformProcess) -> None:
    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    task_id = slugid.nice()
    queue.createTask(task_id, definition(worker_type, name="task page test", payload={"command": [["true"]]}))
    before_claim = get_page(iplatform.root_url, f"/tasks/{task_id}").text
    assert log_source(before_claim)["kind"] == "none"

    claimed = claim(queue, worker_type, "worker-7")
    assert claimed["status"]["taskId"] == task_id
    queue.createArtifact(
        task_id,
        "0",
        "public/logs/live.log",
        {
            "storageType": "reference",
            "url": "http://127.0.0.1:9/log/token-abc",
            "expires": in_a_day(),
            "contentType": "text/plain; charset=utf-8",
        },
    )
    queue.createArtifact(
        task_id,
        "0",
        "public/missing.txt",
        {
            "storageType": "error",
            "reason": "file-missing-on-worker",
            "message": "no such file",
            "expires": in_a_day(),
        },
    )
    page = get_page(iplatform.root_url, f"/tasks/{task_id}").text
    assert "task page test" in page and "worker-7" in page and "inspector-group" in page
    assert 'state-running">running</span>' in page
    src = log_source(page)
    assert src == {**src, "kind": "stream", "url": "http://127.0.0.1:9/log/token-abc", "run": "0"}
    assert "file-missing-on-worker" in page and "no such file" in page
    assert f"/api/queue/v1/task/{task_id}/runs/0/artifacts/public%2Flogs%2Flive.log" in page
    assert "&quot;command&quot;" in page, "the definition is shown (escaped JSON)"

    # The worker replaces the reference with a link once the log is stored: the page switches.
    queue.createArtifact(
        task_id,
        "0",
        "public/logs/live.log",
        {"storageType": "link", "artifact": "public/missing.txt", "expires": in_a_day()},
    )
    queue.reportCompleted(task_id, "0")
    done = get_page(iplatform.root_url, f"/tasks/{task_id}").text
    assert log_source(done)["kind"] == "static"
    assert 'state-completed">completed</span>' in done and "link → public/missing.txt" in done
    assert 'data-refresh="10000"' in done, "a resolved task's page refreshes slowly"


def test_log_and_artifacts_of_a_real_run_are_downloadable(
    iplatform: PlatformProcess, submitter: Submitter, worker: WorkerProcess
) -> None:
    task_id = submitter.create(
        {
            "command": [["bash", "-c", "echo from-the-task; mkdir -p out; echo data > out/a.txt"]],
            "maxRunTime": 60,
            "artifacts": [{"type": "file", "path": "out/a.txt", "name": "public/a.txt"}],
        }
    )
    run = submitter.wait_run(task_id, worker=worker)
    assert run["state"] == "completed", submitter.explain(task_id)
    page = get_page(iplatform.root_url, f"/tasks/{task_id}").text
    src = log_source(page)
    assert src["kind"] == "static"
    log = requests.get(iplatform.root_url + src["url"], timeout=30)
    assert log.status_code == 200 and "from-the-task" in log.text
    links = [html.unescape(u) for u in re.findall(r'<a class="artifact" href="([^"]+)">', page)]
    names = [html.unescape(n) for n in re.findall(r'<a class="artifact" href="[^"]+">([^<]+)</a>', page)]
    assert {"public/a.txt", "public/logs/live.log", "public/logs/live_backing.log"} <= set(names)
    got = requests.get(iplatform.root_url + links[names.index("public/a.txt")], timeout=30)
    assert got.status_code == 200 and got.text == "data\n"
    assert worker.config["workerId"] in page


XSS_NAME = '<script>alert("name")</script>'
XSS_DESCRIPTION = '"><img src=x onerror=alert(1)>'
XSS_PAYLOAD = "</pre><script>alert(2)</script>"


def test_untrusted_task_data_is_escaped(iplatform: PlatformProcess) -> None:
    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    task_id = slugid.nice()
    queue.createTask(
        task_id,
        definition(
            worker_type,
            name=XSS_NAME,
            description=XSS_DESCRIPTION,
            source='https://example.com/"><script>alert(3)</script>',
            payload={"command": [["echo", XSS_PAYLOAD]], "env": {"X": "' onmouseover='alert(4)"}},
        ),
    )
    claim(queue, worker_type)
    queue.createArtifact(
        task_id,
        "0",
        "public/<b>bold</b>.txt",
        {
            "storageType": "reference",
            "url": 'http://example.com/"><script>alert(5)</script>',
            "expires": in_a_day(),
            "contentType": 'text/plain"><script>alert(7)</script>',
        },
    )
    try:  # the platform refuses it (issue 14); the page would not follow it either (logsource.py)
        queue.createArtifact(
            task_id,
            "0",
            "public/logs/live.log",
            {
                "storageType": "reference",
                "url": "javascript:alert(6)",
                "expires": in_a_day(),
                "contentType": "text/plain",
            },
        )
    except taskcluster.exceptions.TaskclusterRestFailure as err:
        assert err.status_code == 400
    pages = [
        get_page(iplatform.root_url, f"/tasks/{task_id}").text,
        get_page(iplatform.root_url, "/").text,
        get_page(iplatform.root_url, f"/groups/{queue.task(task_id)['taskGroupId']}").text,
    ]
    for page in pages:
        assert XSS_NAME not in page and html.escape(XSS_NAME) in page
        assert "<script>alert" not in page and "<img" not in page and "<b>bold" not in page
        assert 'href="javascript:' not in page
        assert page.count("<script") == 2, "only the page's own two scripts"
    task_page = pages[0]
    assert html.escape(XSS_DESCRIPTION) in task_page and html.escape(XSS_PAYLOAD) in task_page
    assert 'href="javascript:' not in task_page
    assert log_source(task_page)["kind"] == "none", "no http(s) live log reference, nothing followed"
    assert "public/&lt;b&gt;bold&lt;/b&gt;.txt" in task_page


def test_not_found_find_static_files_and_api_still_served(iplatform: PlatformProcess) -> None:
    root = iplatform.root_url
    missing = get_page(root, f"/tasks/{slugid.nice()}")
    assert missing.status_code == 404 and "text/html" in missing.headers["Content-Type"]
    assert get_page(root, f"/groups/{slugid.nice()}").status_code == 404
    bad = get_page(root, "/tasks/%3Cscript%3E")
    assert bad.status_code == 404 and "<script>" not in bad.text.split("<main>")[1]

    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    task_id = slugid.nice()
    group = slugid.nice()
    queue.createTask(task_id, definition(worker_type, group=group))
    found = get_page(root, f"/find?id={task_id}", allow_redirects=False)
    assert found.status_code == 303 and found.headers["Location"] == f"/tasks/{task_id}"
    found = get_page(root, f"/find?id={group}", allow_redirects=False)
    assert found.status_code == 303 and found.headers["Location"] == f"/groups/{group}"
    assert get_page(root, "/find?id=nope").status_code == 404

    page = get_page(root, f"/tasks/{task_id}")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name, kind in (
        ("hawk.js", "text/javascript"),
        ("inspector.js", "text/javascript"),
        ("inspector.css", "text/css"),
    ):
        match = re.search(rf"/inspector/static/{re.escape(name)}\?v=[0-9a-f]+", page.text)
        assert match, f"{name} is not linked from the page"
        static = get_page(root, match.group(0))
        assert static.status_code == 200 and static.headers["Content-Type"].startswith(kind)
        assert "@import" not in static.text and "url(" not in static.text and "https://" not in static.text
    assert get_page(root, "/inspector/static/nope.js").status_code == 404

    metrics = get_page(root, "/metrics").text
    for labels in (
        'endpoint="task",service="inspector",status="404"',
        'endpoint="static",service="inspector",status="200"',
    ):
        assert "tcworker_platform_requests_total{" + labels + "}" in metrics, "pages are counted in /metrics"
    assert get_page(root, "/api/queue/v1/ping").json()["alive"] is True
    unknown = get_page(root, "/api/nope/v1/x")
    assert unknown.status_code == 404 and unknown.json()["code"] == "ResourceNotFound"
