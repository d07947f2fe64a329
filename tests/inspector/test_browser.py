"""Browser tests of the inspector: Debian's Chromium driven by Playwright against a real platform.

What a user does: open the list, find the running task, watch its log, see it resolve with its
artifacts, and cancel / rerun a task with credentials typed into the page. The worker is a real
`tcworker run` process; the browser's Hawk signatures are checked by the real platform (and
compared byte for byte with mohawk's).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path
from typing import Any

import mohawk
import mohawk.base
import slugid
from helpers.inspector import LIMITED, PROVISIONER, definition
from helpers.livelogserver import LiveLogServer
from helpers.platformproc import PlatformProcess
from helpers.polling import wait_for
from helpers.submitter import Submitter, iso
from helpers.workerproc import WorkerProcess
from mohawk.util import parse_authorization_header

# A task that prints coloured lines for a few seconds (ANSI green "line N").
PRINTER = "for i in $(seq 1 12); do printf '\\033[32mline %s\\033[0m plain\\n' $i; sleep 0.5; done"


def log_text(page: Any) -> str:
    return str(page.locator("#log").text_content() or "")


def same_origin_only(requests_seen: list[str], root_url: str, allowed: tuple[str, ...] = ()) -> None:
    foreign = [u for u in requests_seen if not u.startswith((root_url, "data:", *allowed))]
    assert not foreign, f"the page fetched from elsewhere (must work with no internet): {foreign}"


def enter_credentials(page: Any, client_id: str, token: str) -> None:
    page.click("#cred-summary")
    page.fill("#cred-client-id", client_id)
    page.fill("#cred-access-token", token)
    page.click("#cred-save")
    page.wait_for_function(
        "id => document.getElementById('cred-summary').textContent.includes(id)", arg=client_id
    )


def click_action(page: Any, action: str, expect: str) -> str:
    page.evaluate("document.getElementById('action-result').textContent = ''")
    page.click(f"button[data-action={action}]")
    page.wait_for_function(
        "want => { const t = document.getElementById('action-result').textContent;"
        " return t.includes(want) || t.includes('failed'); }",
        arg=expect,
        timeout=20000,
    )
    return str(page.locator("#action-result").text_content())


def test_browser_hawk_signature_matches_mohawk(page: Any, iplatform: PlatformProcess) -> None:
    page.goto(iplatform.root_url + "/")
    url = iplatform.root_url + "/api/queue/v1/task/abcDEF/cancel?x=1"
    cert = {"version": 1, "scopes": ["*"], "start": 1, "expiry": 2, "seed": "s", "signature": "sig"}
    for creds, payload in (
        ({"clientId": "someone/x", "accessToken": "secret-token"}, None),
        ({"clientId": "temp", "accessToken": "other", "certificate": cert}, '{"a": 1}'),
    ):
        got = page.evaluate(
            "([url, creds, payload]) => window.tcHawk.header({method: 'POST', url, credentials: creds,"
            " contentType: payload === null ? '' : 'application/json', payload, ts: 1700000000, nonce: 'n0nce'})",
            [url, creds, payload],
        )
        ext = base64.b64encode(json.dumps({"certificate": cert}, separators=(",", ":")).encode()).decode()
        sender = mohawk.Sender(
            {"id": creds["clientId"], "key": creds["accessToken"], "algorithm": "sha256"},
            url,
            "POST",
            content=payload if payload is not None else mohawk.base.EmptyValue,
            content_type="application/json" if payload is not None else mohawk.base.EmptyValue,
            always_hash_content=payload is not None,
            nonce="n0nce",
            ext=ext if "certificate" in creds else None,
            _timestamp=1700000000,
        )
        assert parse_authorization_header(got) == parse_authorization_header(sender.request_header)


def test_running_task_in_list_log_final_state_and_artifacts(
    page: Any, iplatform: PlatformProcess, submitter: Submitter, worker: WorkerProcess, tmp_path: Path
) -> None:
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    page.goto(iplatform.root_url + "/")  # before the task exists: the list must refresh itself
    task_id = submitter.create(
        {
            "command": [["bash", "-c", PRINTER + "; mkdir -p out; echo result > out/r.txt"]],
            "maxRunTime": 120,
            "artifacts": [{"type": "file", "path": "out/r.txt", "name": "public/result.txt"}],
        }
    )
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    row.wait_for(timeout=15000)
    assert "tcworker e2e task" in str(row.text_content())
    submitter.wait_running(task_id, worker=worker)
    page.wait_for_function(
        "id => document.querySelector(`tr[data-task-id='${id}'] .state`).textContent === 'running'",
        arg=task_id,
        timeout=15000,
    )
    row.locator("a.task-link").click()
    page.wait_for_url(f"**/tasks/{task_id}")
    assert page.locator("#task-id").text_content() == task_id

    # While it runs: the page follows whatever the worker publishes as public/logs/live.log. A
    # reference (the worker's live-log server) must show lines before the task resolves; until
    # the worker publishes one, the page says the log is not there yet.
    lines_while_running = False
    live_kind = None
    while submitter.status(task_id)["state"] == "running":
        live = submitter.artifacts(task_id, 0).get("public/logs/live.log")
        live_kind = live["storageType"] if live else None
        text = log_text(page)
        if "line 1" in text and submitter.status(task_id)["state"] == "running":
            lines_while_running = True
            break
        if live_kind is None:
            assert "no public/logs/live.log artifact yet" in str(page.locator("#log-source").text_content())
        time.sleep(0.2)
    assert live_kind == "reference", f"the worker publishes live.log as a reference while the task runs, got {live_kind}"
    assert lines_while_running, "live.log is a reference while the task runs, but no line showed"

    page.wait_for_function(
        "() => document.querySelector('#task-state .state').textContent === 'completed'", timeout=60000
    )
    page.wait_for_function("() => document.getElementById('log').dataset.state === 'complete'", timeout=30000)
    text = log_text(page)
    for i in range(1, 13):
        assert f"line {i} plain" in text, f"line {i} missing from the page's log:\n{text[-2000:]}"
    assert "\x1b" not in text, "ANSI sequences must be rendered, not shown"
    assert re.search(r"^line 7 plain$", text, re.M), "a coloured line shows as its plain text"
    green = page.locator("#log span.ansi-fg-2").first
    assert "line" in str(green.text_content())
    assert green.evaluate("e => getComputedStyle(e).color") == "rgb(35, 209, 139)"
    names = page.locator("#artifacts a.artifact").all_text_contents()
    assert {"public/result.txt", "public/logs/live_backing.log", "public/logs/live.log"} <= set(names)
    href = page.locator("#artifacts a.artifact", has_text="public/result.txt").get_attribute("href")
    assert href is not None
    assert page.request.get(iplatform.root_url + href).text() == "result\n"
    assert worker.config["workerId"] in str(page.locator("#runs").text_content())

    shot = tmp_path / "inspector-task.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("INSPECTOR_SCREENSHOT"):
        shutil.copy(shot, os.environ["INSPECTOR_SCREENSHOT"])
    assert not page.js_errors, page.js_errors
    # The live log comes from the worker's own live-log server on this machine (a reference).
    live_log = tuple(u for u in seen if re.match(r"^http://127\.0\.0\.1:\d+/log/[A-Za-z0-9_-]+", u))
    assert live_log, "the page never read the worker's live log"
    same_origin_only(seen, iplatform.root_url, live_log)


def test_cancel_and_rerun_buttons_need_credentials(
    page: Any, iplatform: PlatformProcess, submitter: Submitter, worker: WorkerProcess
) -> None:
    task_id = submitter.create({"command": [["sleep", "120"]], "maxRunTime": 300})
    submitter.wait_running(task_id, worker=worker)
    page.goto(f"{iplatform.root_url}/tasks/{task_id}")

    out = click_action(page, "cancel", "403")
    assert "cancelTask failed: 403 InsufficientScopes" in out
    assert (
        "anonymous" in out
        and f"queue:cancel-task:-/{submitter.queue.task(task_id)['taskGroupId']}/{task_id}" in out
    )
    assert "no credentials entered" in out
    assert submitter.status(task_id)["state"] == "running"

    enter_credentials(page, LIMITED["clientId"], LIMITED["accessToken"])
    out = click_action(page, "cancel", "403")
    assert "403 InsufficientScopes" in out and "inspector/limited" in out and "queue:cancel-task:" in out

    enter_credentials(page, "static/taskcluster/root", "not-the-token")
    out = click_action(page, "cancel", "401")
    assert "cancelTask failed: 401 AuthenticationFailed" in out
    assert submitter.status(task_id)["state"] == "running"

    enter_credentials(page, "static/taskcluster/root", iplatform.root_access_token)
    out = click_action(page, "cancel", "done")
    assert "cancelTask: done, the task is now exception" in out
    run = submitter.wait_run(task_id, worker=worker)
    assert (run["state"], run["reasonResolved"]) == ("exception", "canceled")
    page.wait_for_function(
        "() => document.querySelector('#task-state .state').textContent === 'exception'", timeout=30000
    )
    assert "canceled" in str(page.locator("#runs").text_content())

    out = click_action(page, "rerun", "done")
    assert "rerunTask: done" in out
    submitter.wait_running(task_id, run_id=1, worker=worker)
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 2", timeout=30000)
    out = click_action(page, "cancel", "done")
    assert "the task is now exception" in out
    assert submitter.wait_run(task_id, run_id=1, worker=worker)["reasonResolved"] == "canceled"
    stored = page.evaluate("sessionStorage.getItem('tcworker-inspector-credentials')")
    assert iplatform.root_access_token in stored, "credentials live in sessionStorage"
    page.click("#cred-summary")
    page.click("#cred-forget")
    assert page.evaluate("sessionStorage.getItem('tcworker-inspector-credentials')") is None
    assert not page.js_errors, page.js_errors


def test_live_log_reference_is_streamed_and_resumed(page: Any, iplatform: PlatformProcess) -> None:
    """The follow logic against a reference live.log: lines appear while the task runs, a dropped
    connection resumes at ?offset=<bytes received>, nothing is shown twice."""
    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    task_id = slugid.nice()
    queue.createTask(task_id, definition(worker_type, name="streamed log"))
    queue.claimWork(
        f"{PROVISIONER}/{worker_type}", {"workerGroup": "inspector-group", "workerId": "w-live", "tasks": 1}
    )
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url))
    expires = iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    with LiveLogServer() as live:
        for i in range(1, 4):
            live.feed.write(f"\x1b[1;31mstream line {i}\x1b[0m\n")
        queue.createArtifact(
            task_id,
            "0",
            "public/logs/live.log",
            {"storageType": "reference", "url": live.url, "expires": expires, "contentType": "text/plain"},
        )
        page.goto(f"{iplatform.root_url}/tasks/{task_id}")
        wait_for(lambda: "stream line 3" in log_text(page), 20, "first lines of the live log")
        live.feed.cut()  # the connection breaks after the page showed 3 lines
        for i in range(4, 7):
            live.feed.write(f"stream line {i} ünïcode\n")
            time.sleep(0.3)
        wait_for(lambda: "stream line 6 ünïcode" in log_text(page), 20, "lines written after the cut")
        assert queue.status(task_id)["status"]["state"] == "running"
        assert live.feed.offsets[0] == 0 and len(live.feed.offsets) >= 2
        first_cut = len("".join(f"\x1b[1;31mstream line {i}\x1b[0m\n" for i in range(1, 4)).encode())
        assert live.feed.offsets[1] == first_cut, "the page resumed at the bytes it had received"
        live.feed.finish()
        page.wait_for_function(
            "() => document.getElementById('log').dataset.state !== 'following'", timeout=20000
        )
    text = log_text(page)
    for i in range(1, 7):
        assert text.count(f"stream line {i}") == 1, text
    assert page.locator("#log span.ansi-fg-1.ansi-bold").first.text_content() == "stream line 1"
    # The worker then links live.log to the stored log and resolves: the page keeps what it
    # streamed (the stream ended cleanly) and shows the final state.
    queue.createArtifact(
        task_id,
        "0",
        "public/logs/stored.log",
        {"storageType": "reference", "url": live.url, "expires": expires, "contentType": "text/plain"},
    )
    queue.createArtifact(
        task_id,
        "0",
        "public/logs/live.log",
        {"storageType": "link", "artifact": "public/logs/stored.log", "expires": expires},
    )
    queue.reportCompleted(task_id, "0")
    page.wait_for_function(
        "() => document.querySelector('#task-state .state').textContent === 'completed'", timeout=30000
    )
    page.wait_for_function("() => document.getElementById('log').dataset.state === 'complete'", timeout=30000)
    assert log_text(page) == text
    live_origin = urllib.parse.urlsplit(live.url)
    same_origin_only(seen, iplatform.root_url, (f"http://{live_origin.netloc}/log/",))
    assert not page.js_errors, page.js_errors


def test_escaped_metadata_runs_no_script_in_the_browser(page: Any, iplatform: PlatformProcess) -> None:
    queue = iplatform.queue()
    worker_type = "insp-" + slugid.nice()[:8].lower().replace("_", "a").replace("-", "b")
    task_id = slugid.nice()
    name = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    queue.createTask(
        task_id, definition(worker_type, name=name, description="</pre><svg onload=window.pwned=3>")
    )
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (f"/tasks/{task_id}", "/", f"/groups/{queue.task(task_id)['taskGroupId']}"):
        page.goto(iplatform.root_url + path)
        page.wait_for_load_state("load")
        assert page.evaluate("window.pwned") is None
        assert page.locator("img, svg").count() == 0
    page.goto(f"{iplatform.root_url}/tasks/{task_id}")
    assert page.locator("#task-name").text_content() == name
    assert not dialogs and not page.js_errors
