"""``tcworker local`` and ``tcworker submit``: run one task file and follow it to its resolution.

``local`` starts the embedded platform on 127.0.0.1 (random port, state in ``./.tcworker``) and a
worker in the same event loop; the worker reaches the platform only over HTTP with the official
client (design G6), exactly as it would reach a real deployment. Each invocation uses a task queue
of its own, so a task left pending by an earlier interrupted run never runs instead of this one.
``submit`` sends the task to a running platform. Both follow the live log while the task runs
(``logfollow``; ``--no-follow`` prints the backing log at the end instead), then print a summary.
The log goes to stdout and everything else to stderr, stdout flushed first, so they stay in order
when both are piped into one place.

A task file is YAML (or JSON): a full task definition (it has a ``payload`` key) or just a payload;
whatever a definition lacks is filled in (queue, times, metadata).
Exit status: 0 completed, 1 failed, 2 exception, 3 no resolution (the worker or platform stopped
first, createTask refused), 64 usage error (bad arguments, unreadable or invalid task file).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import string
import sys
from pathlib import Path
from typing import Any

import slugid
import yaml
from rich.markup import escape

from tcworker import logfollow, tctime
from tcworker.mounts.progress import rich_progress_factory, set_progress_factory

DEFAULT_TASK_QUEUE = "local-provisioner/local"
RESOLVED = ("completed", "failed", "exception")
EXIT_NO_RESOLUTION = 3
EXIT_USAGE = 64  # sysexits' EX_USAGE, as generic-worker's CANT_LOAD_CONFIG

log = logging.getLogger(__name__)


class TaskFileError(Exception):
    """The task file cannot be read or is not a task / payload."""


def load_task_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise TaskFileError(f"cannot read {str(path)!r}: {e.strerror or e}") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaskFileError(f"{str(path)!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise TaskFileError(f"{str(path)!r} must hold a mapping (a task definition or a payload)")
    return data


def build_task(data: dict[str, Any], source_name: str, task_queue_id: str | None = None) -> dict[str, Any]:
    """A complete task definition from a definition or a bare payload (missing fields filled in)."""
    task: dict[str, Any] = dict(data) if "payload" in data else {"payload": data}
    if not task.get("taskQueueId") and not (task.get("provisionerId") and task.get("workerType")):
        task["taskQueueId"] = task_queue_id or DEFAULT_TASK_QUEUE
    now = tctime.now()
    task.setdefault("created", tctime.to_json(now))
    max_run_time = task["payload"].get("maxRunTime", 0) if isinstance(task["payload"], dict) else 0
    if isinstance(max_run_time, bool) or not isinstance(max_run_time, int | float) or max_run_time < 0:
        raise TaskFileError(
            f"{source_name}: maxRunTime must be a whole number of seconds, not {max_run_time!r}"
        )
    deadline_secs = max(3600, int(max_run_time or 0) * 2 + 600)
    task.setdefault("deadline", tctime.to_json(tctime.from_now(deadline_secs)))
    task.setdefault("expires", tctime.to_json(tctime.from_now(max(deadline_secs, 14 * 86400))))
    metadata = dict(task.get("metadata") or {})
    metadata.setdefault("name", source_name)
    metadata.setdefault("description", f"submitted with tcworker from {source_name}")
    metadata.setdefault("owner", "tcworker@localhost")
    metadata.setdefault("source", "https://localhost/tcworker")
    task["metadata"] = metadata
    return task


def queue_of(task: dict[str, Any]) -> tuple[str, str]:
    if task.get("taskQueueId"):
        provisioner, _, worker_type = str(task["taskQueueId"]).partition("/")
        return provisioner, worker_type
    return str(task["provisionerId"]), str(task["workerType"])


def exit_status(state: str) -> int:
    return {"completed": 0, "failed": 1, "exception": 2}.get(state, EXIT_NO_RESOLUTION)


class Terminal:
    """The log on stdout (bytes, unchanged), messages on stderr; stdout is flushed before every
    message so that both streams piped into one place come out in the order they were made."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self._out = sys.stdout.buffer

    def log(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    def say(self, text: str, **kw: Any) -> None:
        self._out.flush()
        self.console.print(text, highlight=False, soft_wrap=True, **kw)


async def wait_resolved(queue: Any, task_id: str, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Poll ``queue.status`` until the task is resolved (retried runs are followed)."""
    delay = 0.05
    while True:
        status: dict[str, Any] = (await queue.status(task_id))["status"]
        if status["state"] in RESOLVED:
            return status
        if stop is not None and stop.is_set():
            return status
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def backing_log_name(task: dict[str, Any]) -> str:
    from tcworker import payload as payload_mod

    payload = task.get("payload") if isinstance(task.get("payload"), dict) else {}
    assert isinstance(payload, dict)
    if "image" in payload:
        return payload_mod.backing_name_for(logfollow.live_log_name(task))
    logs = payload.get("logs") if isinstance(payload.get("logs"), dict) else {}
    assert isinstance(logs, dict)
    return str(logs.get("backing") or payload_mod.DEFAULT_BACKING_LOG)


async def show_log(
    term: Terminal,
    queue: Any,
    task: dict[str, Any],
    task_id: str,
    followed: logfollow.FollowResult | None,
    status: dict[str, Any],
) -> None:
    """After the resolution: print what following the live log did not (the whole backing log
    when nothing was followed, the rest of it when following broke off, nothing when complete)."""
    from taskcluster.aio import download

    runs = status.get("runs", [])
    if not runs:
        return
    run_id = int(runs[-1]["runId"])
    skip = 0
    if followed is not None and followed.run_id == run_id:
        if followed.complete:
            return
        skip = followed.written
    if followed is not None and followed.reason:
        term.say(f"[yellow]live log: {followed.reason}; printing the task log from its backing log[/]")
    name = backing_log_name(task)
    try:
        body, _ = await download.downloadArtifactToBuf(
            taskId=task_id, runId=run_id, name=name, queueService=queue
        )
    except Exception as e:  # the log may not exist (e.g. claim expired)
        term.say(f"(no task log for run {run_id}: {e})")
        return
    term.log(bytes(body)[skip:])


async def list_artifacts(queue: Any, task_id: str, run_id: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    query: dict[str, Any] = {}
    while True:
        page = await queue.listArtifacts(task_id, str(run_id), query=query)
        out += page.get("artifacts", [])
        if not page.get("continuationToken"):
            return out
        query = {"continuationToken": page["continuationToken"]}


def resolution_text(task_id: str, status: dict[str, Any]) -> str:
    runs = status.get("runs", [])
    state = status["state"]
    reason = runs[-1].get("reasonResolved") if runs else None
    style = {"completed": "bold green", "failed": "bold red"}.get(state, "bold yellow")
    text = state if state in ("completed", "failed") else f"{state}/{reason}"
    return f"Task {task_id}: [{style}]{text}[/]"


async def print_summary(
    term: Terminal, queue: Any, root_url: str, task_id: str, status: dict[str, Any]
) -> None:
    """Resolution and artifact URLs (for a platform that stays up: ``submit``, ``local --serve``)."""
    term.say(resolution_text(task_id, status))
    for run in status.get("runs", []):
        run_id = run["runId"]
        try:
            listing = await list_artifacts(queue, task_id, run_id)
        except Exception as e:  # listing is informative only
            term.say(f"  (cannot list artifacts of run {run_id}: {escape(str(e))})")
            continue
        for artifact in listing:
            url = f"{root_url}/api/queue/v1/task/{task_id}/runs/{run_id}/artifacts/{artifact['name']}"
            kind = escape(f"[{artifact['storageType']}]")
            term.say(f"  run {run_id} {kind} {escape(url)}")


async def save_artifacts(
    term: Terminal, queue: Any, task_id: str, status: dict[str, Any], target: Path
) -> None:
    """Copy the last run's artifacts to ``target`` before the embedded platform stops, and say
    where they are (URLs of a stopped platform would be dead links)."""
    from taskcluster.aio import download

    term.say(resolution_text(task_id, status))
    runs = status.get("runs", [])
    if not runs:
        return
    run_id = int(runs[-1]["runId"])
    try:
        listing = await list_artifacts(queue, task_id, run_id)
    except Exception as e:
        term.say(f"  (cannot list artifacts of run {run_id}: {escape(str(e))})")
        return
    base = target / task_id / str(run_id)
    for artifact in listing:
        name, kind = str(artifact["name"]), str(artifact["storageType"])
        path = (base / name).resolve()
        if kind != "object" or not path.is_relative_to(base.resolve()):
            label = escape(f"[{kind}]")
            term.say(f"  {label} {escape(name)}" + (" (not saved)" if kind == "object" else ""))
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = await asyncio.to_thread(open, path, "wb")
            try:
                await download.downloadArtifactToFile(
                    taskId=task_id, runId=run_id, name=name, file=f, queueService=queue
                )
            finally:
                f.close()
        except Exception as e:
            term.say(f"  {escape(name)}: cannot save ({escape(str(e))})")
            continue
        term.say(f"  {escape(name)} → {escape(str(path))}")


def fresh_queue_suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


async def pending_elsewhere(platform: Any, own_queue: str) -> list[tuple[str, int]]:
    """Tasks still pending in the embedded platform from earlier runs (other queues)."""

    def query(conn: Any) -> list[tuple[str, int]]:
        rows = conn.execute(
            "SELECT task_queue_id, COUNT(*) FROM tasks WHERE state = 'pending' GROUP BY task_queue_id"
        ).fetchall()
        return [(str(q), int(n)) for q, n in rows if q != own_queue]

    try:
        return list(await platform.services.db.read(query))
    except Exception:  # informative only
        return []


async def wait_for_interrupt() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def follow_or_wait(
    term: Terminal,
    queue: Any,
    task: dict[str, Any],
    task_id: str,
    follow: bool,
    stop: asyncio.Event | None = None,
) -> tuple[logfollow.FollowResult | None, dict[str, Any]]:
    """Follow the live log (when asked) while waiting for the resolution; then print the rest."""
    followed: logfollow.FollowResult | None = None
    if follow:
        follower = asyncio.create_task(
            logfollow.follow(queue, task_id, logfollow.live_log_name(task), sys.stdout.buffer, term.log)
        )
        waiter = asyncio.create_task(wait_resolved(queue, task_id, stop))
        await asyncio.wait({follower, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if follower.done():
            followed = follower.result()
            status = await waiter
        else:
            status = await waiter
            # Resolved: the live log ends with the log; give the stream a moment to drain.
            try:
                followed = await asyncio.wait_for(asyncio.shield(follower), 10)
            except TimeoutError:
                follower.cancel()
                followed = logfollow.FollowResult(reason="the live log did not end with the task")
    else:
        status = await wait_resolved(queue, task_id, stop)
    if status["state"] in RESOLVED:
        await show_log(term, queue, task, task_id, followed, status)
    return followed, status


# ---- tcworker local ------------------------------------------------------------------------------
def local_main(args: argparse.Namespace) -> int:
    term = Terminal()
    try:
        data = load_task_file(Path(args.task_file))
        task = build_task(data, Path(args.task_file).name, f"{DEFAULT_TASK_QUEUE}-{fresh_queue_suffix()}")
    except TaskFileError as e:
        term.say(f"tcworker local: {escape(str(e))}")
        return EXIT_USAGE
    set_progress_factory(rich_progress_factory(term.console))  # mount downloads over a few MB get a bar
    return asyncio.run(_local(args, task, term, Path(args.data_dir).absolute()))


async def _local(args: argparse.Namespace, task: dict[str, Any], term: Terminal, data_dir: Path) -> int:
    import taskcluster.aio

    from tcworker import config as config_mod
    from tcworker.errors import ConfigError
    from tcworker.logsetup import setup_logging
    from tcworker.platform.serve import start_platform
    from tcworker.worker.runner import run_worker

    redactor = setup_logging(logging.INFO if args.verbose else logging.WARNING)
    provisioner_id, worker_type = queue_of(task)
    platform = await start_platform(listen="127.0.0.1:0", data_dir=data_dir)
    try:
        root_url = platform.root_url
        credentials = dict(platform.root_credentials)
        redactor.add(credentials["accessToken"])
        worker_dir = data_dir / "worker"
        worker_dir.mkdir(parents=True, exist_ok=True)
        key_file = worker_dir / "ed25519.key"
        if not key_file.exists():
            _write_key(key_file)
        try:
            config = config_mod.load(
                None,
                environ={},
                flags={
                    "rootURL": root_url,
                    "clientId": credentials["clientId"],
                    "accessToken": credentials["accessToken"],
                    "provisionerId": provisioner_id,
                    "workerType": worker_type,
                    "workerGroup": "local",
                    "workerId": "local-worker",
                    "engine": args.engine,
                    "tasksDir": str(worker_dir / "tasks"),
                    "cachesDir": str(worker_dir / "caches"),
                    "downloadsDir": str(worker_dir / "downloads"),
                    "ed25519SigningKeyLocation": str(key_file),
                    "requiredDiskSpaceMegabytes": 0,
                    "headlessTasks": True,
                    "livelogExposePort": 0,
                    "livelogPortBase": 0,  # no fixed port: a random one for the live log
                },
            )
        except ConfigError as e:
            term.say(f"tcworker local: {escape(str(e))}")
            return EXIT_USAGE
        queue = taskcluster.aio.Queue({"rootUrl": root_url, "credentials": credentials})
        own_queue = f"{provisioner_id}/{worker_type}"
        older = await pending_elsewhere(platform, own_queue)
        task_id = slugid.nice()
        try:
            await queue.createTask(task_id, task)
        except Exception as e:
            term.say(f"tcworker local: createTask failed: {escape(str(e))}")
            return EXIT_NO_RESOLUTION
        term.say(f"Task {task_id} created on {root_url} ({own_queue})")
        if older:
            waiting = ", ".join(f"{n} in {q}" for q, n in older)
            term.say(
                f"[yellow]Older tasks are still pending in {escape(str(data_dir))} ({waiting}); "
                "they are not run by this invocation.[/]"
            )
        worker_loop: list[Any] = []
        worker = asyncio.create_task(
            run_worker(config, state_dir=worker_dir, on_loop=worker_loop.append, install_signal_handlers=True)
        )
        stop = asyncio.Event()
        worker.add_done_callback(lambda _t: stop.set())
        followed, status = await follow_or_wait(term, queue, task, task_id, not args.no_follow, stop)
        if status["state"] not in RESOLVED:  # the worker exited first (signal, set-up failure)
            code = worker.result() if worker.done() else None
            term.say(f"tcworker local: the worker stopped (exit {code}) before the task resolved")
            term.say(resolution_text(task_id, status))
            return EXIT_NO_RESOLUTION
        if worker_loop:
            worker_loop[0].request_stop(quiet=True)
        await worker
        if args.serve:
            await print_summary(term, queue, root_url, task_id, status)
            term.say(
                f"Serving the platform at {root_url} until Ctrl-C (the task: {root_url}/tasks/{task_id})"
            )
            await wait_for_interrupt()
        else:
            await save_artifacts(term, queue, task_id, status, data_dir / "artifacts")
        return exit_status(status["state"])
    finally:
        await platform.stop()


def _write_key(path: Path) -> None:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(seed).decode())


# ---- tcworker submit ------------------------------------------------------------------------------
def submit_main(args: argparse.Namespace) -> int:
    term = Terminal()
    if not args.root_url:
        term.say("tcworker submit: --root-url (or TASKCLUSTER_ROOT_URL) is required")
        return EXIT_USAGE
    try:
        data = load_task_file(Path(args.task_file))
        task = build_task(data, Path(args.task_file).name, args.task_queue_id)
    except TaskFileError as e:
        term.say(f"tcworker submit: {escape(str(e))}")
        return EXIT_USAGE
    return asyncio.run(_submit(args, task, term))


async def _submit(args: argparse.Namespace, task: dict[str, Any], term: Terminal) -> int:
    import taskcluster.aio
    from taskcluster.exceptions import TaskclusterFailure

    options: dict[str, Any] = {"rootUrl": args.root_url.rstrip("/")}
    if args.client_id and args.access_token:
        options["credentials"] = {"clientId": args.client_id, "accessToken": args.access_token}
    queue = taskcluster.aio.Queue(options)
    task_id = slugid.nice()
    try:
        await queue.createTask(task_id, task)
    except (TaskclusterFailure, OSError) as e:
        term.say(f"tcworker submit: createTask failed: {escape(str(e))}")
        return EXIT_NO_RESOLUTION
    term.say(f"Task {task_id} created ({'/'.join(queue_of(task))})")
    if args.no_wait:
        print(task_id, flush=True)
        return 0
    _, status = await follow_or_wait(term, queue, task, task_id, not args.no_follow)
    await print_summary(term, queue, options["rootUrl"], task_id, status)
    return exit_status(status["state"])
