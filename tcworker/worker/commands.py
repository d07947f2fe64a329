"""Worker subcommands of the CLI (run, local, submit, show-payload-schema, new-ed25519-keypair).

Placeholder until the worker lands: registers nothing but the version line.
"""

from __future__ import annotations

import argparse
from typing import Any

from tcworker import __version__


def version_line() -> str:
    return f"tcworker (simple engine) {__version__}"


def add_worker_commands(sub: Any) -> None:
    _ = (sub, argparse)
