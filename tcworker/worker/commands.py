"""Worker subcommands of the CLI: run, show-payload-schema, new-ed25519-keypair, status, local, submit, shell.

Argument parsing and dispatch only (design G1); each handler returns the process exit code,
numbered as generic-worker's (``tcworker.exitcodes``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tcworker import __version__
from tcworker.exitcodes import ExitCode

EXIT_CODE_HELP = """\
exit codes:
    0  TASKS_COMPLETE               numberOfTasksToRun tasks resolved
   64  CANT_LOAD_CONFIG             config unreadable / not JSON / unknown key / wrong type
   68  IDLE_TIMEOUT                 idle for longer than idleTimeoutSecs
   69  INTERNAL_ERROR               worker panic, tasks dir unusable, not enough disk space while idle
   71  WORKER_STOPPED               SIGINT: running tasks were allowed to finish
   72  WORKER_SHUTDOWN              SIGTERM: running tasks resolved exception/worker-shutdown
   73  INVALID_CONFIG               config values invalid (every problem is listed)
   75  CANT_CREATE_ED25519_KEYPAIR  new-ed25519-keypair failed
   84  CANT_GET_WORKER_STATUS       status could not read the status file
"""


TASK_EXIT_CODE_HELP = """\
exit status:
    0  the task completed
    1  the task failed
    2  the task resolved exception (any reason)
    3  no resolution: createTask refused, or the worker / platform stopped first
   64  usage error: bad arguments, task file unreadable or invalid
"""


def version_line() -> str:
    engine = os.environ.get("TCWORKER_ENGINE", "simple")
    return f"tcworker ({engine} engine) {__version__}"


def _config_help() -> str:
    from tcworker.config import KEYS, REQUIRED

    lines = ["config keys (generic-worker's names; * = required):"]
    for key in sorted(KEYS):
        _, default = KEYS[key]
        mark = "*" if key in REQUIRED else " "
        shown = "" if key in REQUIRED else f" [default: {json.dumps(default)}]"
        if key == "tasksDir":
            shown = ' [default: "tasks"; multiuser: "/home"]'
        lines.append(f"  {mark} {key}{shown}")
    return "\n".join(lines)


def add_worker_commands(sub: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser(
        "run",
        help="run the worker (generic-worker compatible config)",
        formatter_class=raw,
        epilog=_config_help() + "\n\nTASKCLUSTER_ROOT_URL, TASKCLUSTER_CLIENT_ID, TASKCLUSTER_ACCESS_TOKEN,\n"
        "TASKCLUSTER_CERTIFICATE override the file's values.\n\n" + EXIT_CODE_HELP,
    )
    run.add_argument(
        "--config", default="generic-worker.config", help="config file (default generic-worker.config)"
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=cmd_run)

    schema = sub.add_parser("show-payload-schema", help="print the task payload JSON schema")
    schema.add_argument("--engine", default="simple", choices=["simple", "multiuser", "docker"])
    schema.set_defaults(handler=cmd_show_payload_schema)

    features = sub.add_parser(
        "show-features", help="print the one ordered feature list every run goes through (both payload kinds)"
    )
    features.add_argument("--json", action="store_true", help="as JSON")
    features.set_defaults(handler=cmd_show_features)

    keys = sub.add_parser("new-ed25519-keypair", help="create an ed25519 key pair for chain of trust")
    keys.add_argument("--file", required=True, help="where to write the private key seed (base64)")
    keys.set_defaults(handler=cmd_new_keypair)

    status = sub.add_parser("status", help="print the ids of the tasks this host's worker is running")
    status.set_defaults(handler=cmd_status)

    local = sub.add_parser(
        "local",
        help="run one task file with an embedded platform and worker (state in ./.tcworker)",
        formatter_class=raw,
        epilog="The log is followed live; the artifacts are saved under DATA_DIR/artifacts/<taskId>/<runId>/\n"
        "(or, with --serve, served with the platform until Ctrl-C).\n" + TASK_EXIT_CODE_HELP,
    )
    local.add_argument("task_file", metavar="TASK.yml", help="a task definition, or just its payload")
    local.add_argument("--engine", default="simple", choices=["simple", "multiuser", "docker"])
    local.add_argument("--data-dir", default=".tcworker", help="state directory (default ./.tcworker)")
    local.add_argument("--verbose", action="store_true", help="show the worker's own log too")
    local.add_argument("--no-follow", action="store_true", help="print the log when the task ends, not live")
    local.add_argument(
        "--serve",
        action="store_true",
        help="keep the platform serving after the task resolved (until Ctrl-C)",
    )
    local.set_defaults(handler=cmd_local)
    _usage_errors_exit(local)

    submit = sub.add_parser(
        "submit",
        help="submit a task file to a running platform and follow it to its resolution",
        formatter_class=raw,
        epilog="Credentials: --client-id/--access-token or TASKCLUSTER_CLIENT_ID/TASKCLUSTER_ACCESS_TOKEN.\n"
        "The live log is followed while the task runs (--no-follow: printed once it is resolved).\n"
        + TASK_EXIT_CODE_HELP,
    )
    submit.add_argument("task_file", metavar="TASK.yml", help="a task definition, or just its payload")
    submit.add_argument(
        "--root-url", default=os.environ.get("TASKCLUSTER_ROOT_URL"), help="platform root URL"
    )
    submit.add_argument("--client-id", default=os.environ.get("TASKCLUSTER_CLIENT_ID"))
    submit.add_argument("--access-token", default=os.environ.get("TASKCLUSTER_ACCESS_TOKEN"))
    submit.add_argument(
        "--task-queue-id", default=None, help="queue for payload-only files (default local-provisioner/local)"
    )
    submit.add_argument("--no-wait", action="store_true", help="print the taskId and exit")
    submit.add_argument("--no-follow", action="store_true", help="print the log when the task ends, not live")
    submit.set_defaults(handler=cmd_submit)
    _usage_errors_exit(submit)

    shell = sub.add_parser(
        "shell",
        help="open the interactive shell of a running task (features.interactive)",
        epilog="Credentials: TASKCLUSTER_CLIENT_ID/TASKCLUSTER_ACCESS_TOKEN (the shell's artifact is private).",
    )
    shell.add_argument("task_id", metavar="TASK_ID")
    shell.add_argument("--root-url", default=os.environ.get("TASKCLUSTER_ROOT_URL"), help="platform root URL")
    shell.set_defaults(handler=cmd_shell)
    _usage_errors_exit(shell)


def cmd_shell(args: argparse.Namespace) -> int:
    from tcworker.interactive.client import ShellNotAvailable, attach, find_socket_url

    if not args.root_url:
        print("tcworker shell: no root URL (--root-url or TASKCLUSTER_ROOT_URL)", file=sys.stderr)
        return 64
    options: dict[str, Any] = {"rootUrl": args.root_url}
    client_id, token = os.environ.get("TASKCLUSTER_CLIENT_ID"), os.environ.get("TASKCLUSTER_ACCESS_TOKEN")
    if client_id and token:
        options["credentials"] = {"clientId": client_id, "accessToken": token}
    try:
        url = find_socket_url(options, args.task_id)
    except ShellNotAvailable as e:
        print(f"tcworker shell: {e}", file=sys.stderr)
        return 1
    return asyncio.run(attach(url))


def _usage_errors_exit(parser: argparse.ArgumentParser) -> None:
    """Bad arguments exit 64 (argparse's own 2 would read as "exception")."""

    def error(message: str) -> None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        sys.exit(64)

    parser.error = error  # type: ignore[method-assign]


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    import uvloop

    from tcworker import config as config_mod
    from tcworker.errors import ConfigError
    from tcworker.logsetup import setup_logging
    from tcworker.worker.runner import run_worker

    redactor = setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = config_mod.load(Path(args.config), os.environ)
    except ConfigError as e:
        print(f"tcworker: {e}", file=sys.stderr)
        return int(e.exit_code)
    redactor.add(config.private.accessToken)
    redactor.add(config.private.certificate)
    # uvloop: sockets, pipes and timers in C. A trivial task is ~9 queue round trips; the standard
    # loop's transports cost ~0.07 ms more per call here (bench/worker.py, issue 15), and the
    # worker's CPU per task ~7 % more. Helpers that run as another user go through ``setpriv``
    # (``tcworker.engines.runas``): uvloop's subprocesses take no ``user=``.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_worker(config))


def cmd_show_payload_schema(args: argparse.Namespace) -> int:
    from tcworker import schemas

    print(json.dumps(schemas.payload_schema(args.engine), indent=2))
    return 0


def cmd_show_features(args: argparse.Namespace) -> int:
    """Features in the order a run starts them (they stop in reverse), with what each is for."""
    from tcworker.features import describe_features

    rows = describe_features()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for i, row in enumerate(rows, 1):
        print(f"{i:2}. {row['name']:<{width}}  {row['summary']}  [{row['class']}]")
    return 0


def cmd_new_keypair(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(seed).decode())
        os.chmod(args.file, 0o600)
    except (OSError, ValueError) as e:
        print(f"tcworker: cannot create ed25519 key pair in {args.file!r}: {e}", file=sys.stderr)
        return int(ExitCode.CANT_CREATE_ED25519_KEYPAIR)
    sys.stdout.write(base64.b64encode(public).decode())
    sys.stdout.flush()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from tcworker.worker.loop import STATUS_FILE

    path = Path(tempfile.gettempdir()) / STATUS_FILE
    try:
        data = json.loads(path.read_text()) if path.exists() else {"currentTaskIds": []}
    except (OSError, ValueError) as e:
        print(f"tcworker: cannot read worker status {str(path)!r}: {e}", file=sys.stderr)
        return int(ExitCode.CANT_GET_WORKER_STATUS)
    print(json.dumps({"currentTaskIds": list(data.get("currentTaskIds", []))}, indent=2))
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    from tcworker.local import local_main

    return local_main(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from tcworker.local import submit_main

    return submit_main(args)
