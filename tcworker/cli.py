"""The ``tcworker`` command line: argument parsing and dispatch only, no logic (design G1).

Each subcommand's implementation lives in its own module and is imported lazily so that
``tcworker --help`` stays fast and a broken optional dependency breaks only its own command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tcworker import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcworker",
        description="A Taskcluster worker (generic-worker and docker-worker payloads) "
        "with an embedded Taskcluster-compatible platform.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--short-version", action="store_true", help="print just the version number")
    sub = parser.add_subparsers(dest="command")

    queue = sub.add_parser("queue", help="the local Taskcluster platform")
    queue_sub = queue.add_subparsers(dest="queue_command")
    serve = queue_sub.add_parser("serve", help="serve the queue, object, auth, index and purge-cache APIs")
    serve.add_argument(
        "--listen", default="127.0.0.1:8080", help="HOST:PORT to bind (default 127.0.0.1:8080)"
    )
    serve.add_argument("--data-dir", default="./.tcworker", help="state directory (default ./.tcworker)")
    serve.add_argument("--root-access-token", default=None, help="access token of static/taskcluster/root")
    serve.add_argument(
        "--claim-timeout", type=float, default=1200.0, help="seconds a claim lasts (default 1200)"
    )
    serve.add_argument("--clients", default=None, help="YAML file of further static clients and their scopes")

    from tcworker.provenance.verify_cli import add_verify_command
    from tcworker.worker.commands import add_worker_commands

    add_worker_commands(sub)
    add_verify_command(sub)
    return parser


def run() -> int:
    """The program's entry point (console script and ``python -m tcworker``): ``main`` in a
    process of its own, where unused import-time costs can be skipped."""
    skip_unused_format_plugins()
    return main()


def skip_unused_format_plugins() -> None:
    """Keep ``jsonschema`` from importing ``rfc3987_syntax`` in a tcworker process.

    When that optional package is installed (``jsonschema[format-nongpl]``, pulled in by e.g.
    scriptworker), ``import jsonschema`` compiles its 38 lark grammars for the ``iri`` formats:
    2.5–3 s of CPU at every worker and platform start here. tcworker asserts only ``date-time``
    and ``uri`` (``tcworker.jsonformats``), so the import is refused instead (jsonschema treats
    it as absent). Only for the program itself: a library user's process keeps its formats.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # import → ImportError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command in ("local", "submit"):  # their usage errors exit 64, not argparse's 2
            print(
                f"tcworker {args.command}: error: unrecognized arguments: {' '.join(unknown)}",
                file=sys.stderr,
            )
            return 64
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.version:
        from tcworker.worker.commands import version_line

        print(version_line())
        return 0
    if args.short_version:
        print(__version__)
        return 0
    if args.command == "queue" and getattr(args, "queue_command", None) == "serve":
        from tcworker.platform.serve import serve_main

        return serve_main(args)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 64
    result: int = handler(args)
    return result
