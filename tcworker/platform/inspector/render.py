"""HTML of the inspector's pages, built from the views with every value escaped.

Task definitions, names, artifact names and reference URLs are written by whoever created the
task or ran it, so they are untrusted: every interpolated value goes through :func:`esc`
(``html.escape`` with quotes, safe in text and in quoted attributes), URLs are built here from
quoted path segments, and a user-supplied URL (``metadata.source``) only becomes a link when it
is http(s). Elements the script refreshes in place carry ``data-live`` and a stable ``id``.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

from tcworker.platform.clock import json_ms, parse_ms
from tcworker.platform.inspector.logsource import LogSource, artifact_url, is_web_url
from tcworker.platform.inspector.views import GroupView, TaskLine, TaskList
from tcworker.platform.queue.artifacts import Artifact
from tcworker.platform.store.models import TaskRecord

UNRESOLVED = ("unscheduled", "pending", "running")
#: Refresh periods (ms) the script reads from ``<body data-refresh>``.
REFRESH_ACTIVE_MS = 2000
REFRESH_IDLE_MS = 10000


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def task_href(task_id: str, run: int | None = None) -> str:
    return f"/tasks/{q(task_id)}" + (f"?run={run}" if run is not None else "")


def group_href(group_id: str, before: int | None = None) -> str:
    return f"/groups/{q(group_id)}" + (f"?before={before}" if before is not None else "")


def when(value: object) -> str:
    """A wire timestamp as a short UTC text inside <time>; empty when absent."""
    if not isinstance(value, str) or not value:
        return ""
    full = esc(value)  # escaped once for both attributes: three escapes per cell add up on a list
    return f'<time datetime="{full}" title="{full}">{esc(value.replace("T", " ")[:19])}</time>'


def duration(run: dict[str, Any]) -> str:
    started, resolved = run.get("started"), run.get("resolved")
    if not isinstance(started, str) or not isinstance(resolved, str):
        return ""
    try:
        seconds = (parse_ms(resolved) - parse_ms(started)) / 1000
    except ValueError:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def badge(state: str) -> str:
    safe = esc(state)
    return f'<span class="state state-{safe}">{safe}</span>'


def static_url(name: str, versions: dict[str, str]) -> str:
    return f"/inspector/static/{q(name)}?v={q(versions.get(name, '0'))}"


def layout(title: str, body: str, *, refresh_ms: int, versions: dict[str, str]) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · tcworker inspector</title>
<link rel="stylesheet" href="{static_url("inspector.css", versions)}">
<script src="{static_url("hawk.js", versions)}" defer></script>
<script src="{static_url("inspector.js", versions)}" defer></script>
</head>
<body data-refresh="{refresh_ms}">
<header class="top">
  <a class="brand" href="/">tcworker inspector</a>
  <form class="find" action="/find" method="get">
    <input name="id" placeholder="taskId or taskGroupId" aria-label="taskId or taskGroupId" size="26">
  </form>
  <details class="credentials" id="credentials">
    <summary id="cred-summary">credentials: none</summary>
    <form id="cred-form" autocomplete="off">
      <label>clientId <input name="clientId" id="cred-client-id" spellcheck="false"></label>
      <label>accessToken <input name="accessToken" id="cred-access-token" type="password"></label>
      <label>certificate (only for temporary credentials)
        <textarea name="certificate" id="cred-certificate" rows="2" spellcheck="false"></textarea></label>
      <button type="submit" id="cred-save">use these credentials</button>
      <button type="button" id="cred-forget">forget</button>
      <p class="hint">Kept in this tab's sessionStorage only. API calls are Hawk-signed in the
      browser: the access token itself is never sent.</p>
    </form>
  </details>
</header>
<main>
{body}
</main>
</body>
</html>
"""


def _task_rows(lines: Iterable[TaskLine], *, show_group: bool) -> str:
    rows = []
    for line in lines:
        run = line.last_run
        group = (
            f'<td><a href="{esc(group_href(line.task_group_id))}"><code>{esc(line.task_group_id)}</code></a></td>'
            if show_group
            else ""
        )
        task_id = esc(line.task_id)  # once per row, used twice
        rows.append(
            f'<tr data-task-id="{task_id}">'
            f'<td><a class="task-link" href="{esc(task_href(line.task_id))}"><code>{task_id}</code></a></td>'
            f'<td class="name">{esc(line.name)}</td>'
            f"<td>{badge(line.state)}</td>"
            f"{group}"
            f"<td>{esc(line.task_queue_id)}</td>"
            f"<td>{len(line.runs)}</td>"
            f"<td>{when(line.created)}</td>"
            f"<td>{when(run.get('started'))}</td>"
            f"<td>{when(run.get('resolved'))}</td>"
            f"<td>{esc(duration(run))}</td>"
            "</tr>"
        )
    return "\n".join(rows)


def task_table(tasks: TaskList, *, show_group: bool, older_href: str | None, newest_href: str | None) -> str:
    group_head = "<th>task group</th>" if show_group else ""
    nav = []
    if newest_href is not None:
        nav.append(f'<a href="{esc(newest_href)}">newest</a>')
    if older_href is not None:
        nav.append(f'<a class="older" href="{esc(older_href)}">older tasks →</a>')
    body = _task_rows(tasks.lines, show_group=show_group) or (
        f'<tr><td colspan="{10 if show_group else 9}" class="empty">no tasks</td></tr>'
    )
    return f"""<div id="task-list" data-live>
<table class="tasks" id="task-table">
<thead><tr><th>taskId</th><th>name</th><th>state</th>{group_head}<th>task queue</th><th>runs</th>
<th>created</th><th>started</th><th>resolved</th><th>took</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
<nav class="pages">{" · ".join(nav)}</nav>
</div>"""


def tasks_page(tasks: TaskList, groups: list[str], before: int | None, versions: dict[str, str]) -> str:
    older = f"/?before={tasks.older}" if tasks.older is not None else None
    group_links = (
        " ".join(f'<a href="{esc(group_href(g))}"><code>{esc(g)}</code></a>' for g in groups) or "none yet"
    )
    body = f"""<h1>Tasks <small>newest first</small></h1>
<p class="groups" id="recent-groups" data-live>Recent task groups: {group_links}</p>
{task_table(tasks, show_group=True, older_href=older, newest_href="/" if before is not None else None)}"""
    return layout("Tasks", body, refresh_ms=REFRESH_ACTIVE_MS, versions=versions)


def group_page(group: GroupView, before: int | None, versions: dict[str, str]) -> str:
    gid = group.task_group_id
    counts = " ".join(f"{badge(state)} {n}" for state, n in sorted(group.state_counts.items())) or "no tasks"
    sealed = f" · sealed {when(json_ms(group.sealed_ms))}" if group.sealed_ms is not None else ""
    older = group_href(gid, group.tasks.older) if group.tasks.older is not None else None
    body = f"""<h1>Task group <code>{esc(gid)}</code></h1>
<p id="group-summary" data-live>schedulerId <code>{esc(group.scheduler_id)}</code> · expires
{when(json_ms(group.expires_ms))}{sealed}<br>{sum(group.state_counts.values())} tasks: {counts}</p>
{task_table(group.tasks, show_group=False, older_href=older, newest_href=group_href(gid) if before is not None else None)}"""
    active = any(s in UNRESOLVED for s in group.state_counts)
    return layout(
        f"Group {gid}", body, refresh_ms=REFRESH_ACTIVE_MS if active else REFRESH_IDLE_MS, versions=versions
    )


def _runs_table(task: TaskRecord, shown: int) -> str:
    if not task.runs:
        return '<p class="empty">no runs yet</p>'
    rows = []
    for run_id, run in enumerate(task.runs):
        worker = f"{run.get('workerGroup', '')}/{run.get('workerId', '')}" if "workerId" in run else ""
        mark = ' class="shown"' if run_id == shown else ""
        rows.append(
            f'<tr{mark}><td><a href="{esc(task_href(task.task_id, run_id))}">{run_id}</a></td>'
            f"<td>{badge(str(run.get('state', '')))}</td>"
            f"<td>{esc(run.get('reasonCreated', ''))}</td>"
            f"<td>{esc(run.get('reasonResolved', ''))}</td>"
            f"<td>{esc(worker)}</td>"
            f"<td>{when(run.get('scheduled'))}</td>"
            f"<td>{when(run.get('started'))}</td>"
            f"<td>{when(run.get('resolved'))}</td>"
            f"<td>{esc(duration(run))}</td>"
            f"<td>{when(run.get('takenUntil'))}</td></tr>"
        )
    return (
        '<table class="runs"><thead><tr><th>run</th><th>state</th><th>reason created</th>'
        "<th>reason resolved</th><th>worker</th><th>scheduled</th><th>started</th><th>resolved</th>"
        "<th>took</th><th>taken until</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _artifacts_table(task_id: str, run_id: int, artifacts: list[Artifact]) -> str:
    if not artifacts:
        return '<p class="empty">no artifacts</p>'
    rows = []
    for art in artifacts:
        url = artifact_url(task_id, run_id, art.name)
        if art.storage_type == "error":
            what = f"error: {art.details.get('reason', '')}: {art.details.get('message', '')}"
            link = f'<span class="artifact-error">{esc(art.name)}</span>'
        elif art.storage_type == "object" and not art.present:
            what, link = "upload not finished", esc(art.name)
        else:
            what = art.storage_type
            if art.storage_type == "link":
                what = f"link → {art.details.get('artifact', '')}"
            elif art.storage_type == "reference":
                what = f"reference → {art.details.get('url', '')}"
            private = "" if art.name.startswith("public/") else " <small>(needs credentials)</small>"
            link = f'<a class="artifact" href="{esc(url)}">{esc(art.name)}</a>{private}'
        rows.append(
            f"<tr><td>{link}</td><td>{esc(what)}</td><td>{esc(art.content_type)}</td>"
            f"<td>{when(json_ms(art.expires_ms))}</td></tr>"
        )
    return (
        '<table class="artifacts"><thead><tr><th>name</th><th>kind</th><th>content type</th>'
        "<th>expires</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _metadata(task: TaskRecord) -> str:
    meta = task.definition.get("metadata") or {}
    source = meta.get("source", "")
    source_html = (
        f'<a href="{esc(source)}" rel="noopener noreferrer nofollow">{esc(source)}</a>'
        if is_web_url(source)
        else esc(source)
    )
    return (
        f'<p class="description">{esc(meta.get("description", ""))}</p>'
        f'<p class="meta">owner {esc(meta.get("owner", ""))} · source {source_html}</p>'
    )


def task_page(
    task: TaskRecord,
    run_id: int | None,
    artifacts: list[Artifact],
    log: LogSource | None,
    versions: dict[str, str],
) -> str:
    d = task.definition
    tid = task.task_id
    name = (d.get("metadata") or {}).get("name", "") or tid
    resolved = task.state not in UNRESOLVED
    shown = run_id if run_id is not None else -1
    if log is None:
        log_div = (
            '<div id="log-source" data-live data-kind="none" data-run="" data-url=""><p>no runs yet</p></div>'
        )
    else:
        raw = f' · <a href="{esc(log.url)}" target="_blank" rel="noopener">raw</a>' if log.url else ""
        log_div = (
            f'<div id="log-source" data-live data-kind="{esc(log.kind)}" data-run="{shown}"'
            f' data-url="{esc(log.url)}" data-resolved="{"true" if resolved else "false"}">'
            f"<p>run {shown} · <code>{esc(log.name)}</code> · {esc(log.note)}{raw}</p></div>"
        )
    definition = json.dumps(d, indent=2, ensure_ascii=False, sort_keys=False)
    body = f"""<h1 id="task-name">{esc(name)}</h1>
<section id="task-summary" data-live>
<p>taskId <code id="task-id">{esc(tid)}</code> · task group
<a href="{esc(group_href(str(d.get("taskGroupId", ""))))}"><code>{esc(d.get("taskGroupId", ""))}</code></a>
· queue <code>{esc(task.task_queue_id)}</code> · state <span id="task-state">{badge(task.state)}</span>
· retries left {task.retries_left}</p>
<p>created {when(d.get("created"))} · deadline {when(d.get("deadline"))} · expires {when(d.get("expires"))}</p>
{_metadata(task)}
</section>
<div class="actions">
  <button type="button" data-action="cancel" data-task-id="{esc(tid)}">cancel</button>
  <button type="button" data-action="rerun" data-task-id="{esc(tid)}">rerun</button>
  <pre id="action-result" role="status" aria-live="polite"></pre>
</div>
<h2>Runs</h2>
<section id="runs" data-live>{_runs_table(task, shown)}</section>
<h2>Log</h2>
<section class="log-section">
{log_div}
<pre id="log" class="log" tabindex="0"></pre>
</section>
<h2>Artifacts <small>of run {shown if shown >= 0 else "-"}</small></h2>
<section id="artifacts" data-live>{_artifacts_table(tid, shown, artifacts) if shown >= 0 else '<p class="empty">no runs yet</p>'}</section>
<h2>Definition</h2>
<details open><summary>task definition (JSON)</summary><pre id="definition" class="definition">{esc(definition)}</pre></details>"""
    refresh = REFRESH_IDLE_MS if resolved else REFRESH_ACTIVE_MS
    return layout(f"{name} ({tid})", body, refresh_ms=refresh, versions=versions)


def not_found_page(what: str, versions: dict[str, str]) -> str:
    body = f'<h1>Not found</h1><p class="not-found">{esc(what)}</p><p><a href="/">all tasks</a></p>'
    return layout("Not found", body, refresh_ms=0, versions=versions)
