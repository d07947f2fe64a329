"""The ``tcworker verify`` subcommand's arguments; the checks live in ``tcworker.provenance.verify``,
imported only when the command runs (``tcworker --help`` stays fast)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_verify_command(sub: Any) -> None:
    cmd = sub.add_parser(
        "verify",
        help="check a task run's signed chain of trust and every artifact it lists (exit 0 ok / 1 not)",
    )
    cmd.add_argument("task_id", metavar="TASK_ID")
    cmd.add_argument("--root-url", default=os.environ.get("TASKCLUSTER_ROOT_URL"), help="deployment root URL")
    cmd.add_argument(
        "--public-key",
        required=True,
        help="the worker's ed25519 public key (base64, as new-ed25519-keypair prints it) or a file holding it",
    )
    cmd.add_argument("--run", type=int, default=None, help="run id (default: the latest run)")
    cmd.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from tcworker.provenance.keys import UnusableKey, parse_public_key
    from tcworker.provenance.verify import render, verify

    console = Console()
    if not args.root_url:
        console.print("tcworker verify: --root-url (or TASKCLUSTER_ROOT_URL) is required")
        return 1
    try:
        key = parse_public_key(args.public_key)
    except UnusableKey as e:
        console.print(f"tcworker verify: {e}")
        return 1
    credentials = None
    if os.environ.get("TASKCLUSTER_CLIENT_ID") and os.environ.get("TASKCLUSTER_ACCESS_TOKEN"):
        credentials = {
            "clientId": os.environ["TASKCLUSTER_CLIENT_ID"],
            "accessToken": os.environ["TASKCLUSTER_ACCESS_TOKEN"],
        }
    report = asyncio.run(verify(args.task_id, args.root_url, key, args.run, credentials))
    render(report, console)
    return 0 if report.ok else 1
