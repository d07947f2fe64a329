"""``tcworker local`` and ``tcworker submit``: run one task file and follow it to its resolution.

``local`` starts the embedded platform on 127.0.0.1 (random port, state in ``./.tcworker``) and a
worker in the same event loop; the worker reaches the platform only over HTTP with the official
client (design G6), exactly as it would reach a real deployment. The task log is streamed to the
terminal as the worker writes it. ``submit`` sends the task to an already running platform, waits
for the resolution, then prints the backing log (downloaded through the official client).

A task file is YAML (or JSON): a full task definition (it has a ``payload`` key) or just a payload;
whatever a definition lacks is filled in (queue ``local-provisioner/local``, times, metadata).
Exit status: 0 completed, 1 failed, 2 exception (or anything else).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import slugid
import yaml
from rich.console import Console
from rich.markup import escape

from tcworker import tctime
from tcworker.mounts.progress import rich_progress_factory, set_progress_factory

DEFAULT_TASK_QUEUE = "local-provisioner/local"
RESOLVED = ("completed", "failed", "exception")

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
    return {"completed": 0, "failed": 1}.get(state, 2)


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


async def print_summary(
    console: Console, queue: Any, root_url: str, task_id: str, status: dict[str, Any]
) -> None:
    runs = status.get("runs", [])
    state = status["state"]
    reason = runs[-1].get("reasonResolved") if runs else None
    style = {"completed": "bold green", "failed": "bold red"}.get(state, "bold yellow")
    text = state if state in ("completed", "failed") else f"{state}/{reason}"
    console.print(f"Task {task_id}: [{style}]{text}[/]", highlight=False)
    for run in runs:
        run_id = run["runId"]
        try:
            listing = await queue.listArtifacts(task_id, str(run_id))
        except Exception as e:  # listing is informative only
            console.print(f"  (cannot list artifacts of run {run_id}: {e})", highlight=False)
            continue
        for artifact in listing.get("artifacts", []):
            url = f"{root_url}/api/queue/v1/task/{task_id}/runs/{run_id}/artifacts/{artifact['name']}"
            kind = escape(f"[{artifact['storageType']}]")
            console.print(f"  run {run_id} {kind} {escape(url)}", highlight=False, soft_wrap=True)


# ---- tcworker local ------------------------------------------------------------------------------
def local_main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        data = load_task_file(Path(args.task_file))
    except TaskFileError as e:
        console.print(f"tcworker local: {e}", highlight=False)
        return 2
    set_progress_factory(rich_progress_factory(console))  # mount downloads over a few MB get a bar
    return asyncio.run(_local(args, data, console, Path(args.data_dir).absolute()))


async def _local(args: argparse.Namespace, data: dict[str, Any], console: Console, data_dir: Path) -> int:
    import taskcluster.aio

    from tcworker import config as config_mod
    from tcworker.errors import ConfigError
    from tcworker.logsetup import setup_logging
    from tcworker.platform.serve import start_platform
    from tcworker.worker.runner import run_worker

    redactor = setup_logging(logging.INFO if args.verbose else logging.WARNING)
    task = build_task(data, Path(args.task_file).name)
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
                },
            )
        except ConfigError as e:
            console.print(f"tcworker local: {e}", highlight=False)
            return 2
        queue = taskcluster.aio.Queue({"rootUrl": root_url, "credentials": credentials})
        task_id = slugid.nice()
        await queue.createTask(task_id, task)
        console.print(
            f"Task {task_id} created on {root_url} ({provisioner_id}/{worker_type})",
            highlight=False,
            soft_wrap=True,
        )
        out = sys.stdout.buffer

        def listener(chunk: bytes) -> None:
            out.write(chunk)
            out.flush()

        worker_loop: list[Any] = []
        worker = asyncio.create_task(
            run_worker(
                config,
                state_dir=worker_dir,
                log_listeners=lambda tid, _rid: [listener] if tid == task_id else [],
                on_loop=worker_loop.append,
            )
        )
        waiter = asyncio.create_task(wait_resolved(queue, task_id))
        done, _ = await asyncio.wait({worker, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # the worker exited first (signal, set-up failure)
            waiter.cancel()
            code = worker.result()
            console.print(
                f"tcworker local: the worker stopped (exit {code}) before the task resolved", highlight=False
            )
            status = (await queue.status(task_id))["status"]
            await print_summary(console, queue, root_url, task_id, status)
            return 2
        status = waiter.result()
        if worker_loop:
            worker_loop[0].request_stop(quiet=True)
        await worker
        await print_summary(console, queue, root_url, task_id, status)
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
    console = Console(stderr=True)
    if not args.root_url:
        console.print("tcworker submit: --root-url (or TASKCLUSTER_ROOT_URL) is required", highlight=False)
        return 2
    try:
        data = load_task_file(Path(args.task_file))
    except TaskFileError as e:
        console.print(f"tcworker submit: {e}", highlight=False)
        return 2
    return asyncio.run(_submit(args, data, console))


async def _submit(args: argparse.Namespace, data: dict[str, Any], console: Console) -> int:
    import taskcluster.aio
    from taskcluster.aio import download
    from taskcluster.exceptions import TaskclusterFailure

    options: dict[str, Any] = {"rootUrl": args.root_url.rstrip("/")}
    if args.client_id and args.access_token:
        options["credentials"] = {"clientId": args.client_id, "accessToken": args.access_token}
    queue = taskcluster.aio.Queue(options)
    task = build_task(data, Path(args.task_file).name, args.task_queue_id)
    task_id = slugid.nice()
    try:
        await queue.createTask(task_id, task)
    except TaskclusterFailure as e:
        console.print(f"tcworker submit: createTask failed: {e}", highlight=False)
        return 2
    console.print(f"Task {task_id} created ({'/'.join(queue_of(task))})", highlight=False)
    if args.no_wait:
        print(task_id)
        return 0
    status = await wait_resolved(queue, task_id)
    runs = status.get("runs", [])
    if runs:
        run_id = runs[-1]["runId"]
        try:
            body, _ = await download.downloadArtifactToBuf(
                taskId=task_id, runId=run_id, name="public/logs/live_backing.log", queueService=queue
            )
            sys.stdout.buffer.write(bytes(body))
            sys.stdout.flush()
        except Exception as e:  # the log may not exist (e.g. claim expired)
            console.print(f"(no task log for run {run_id}: {e})", highlight=False)
    await print_summary(console, queue, options["rootUrl"], task_id, status)
    return exit_status(status["state"])
