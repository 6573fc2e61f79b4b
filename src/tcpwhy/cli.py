"""Command line: one sub-command per view; each stage's folder registers its own commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tcpwhy import __version__
from tcpwhy.errors import EXIT_BAD_INPUT, TcpwhyError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpwhy",
        description="Tells why TCP connections break: from captures and from a live Linux host.",
    )
    parser.add_argument("--version", action="version", version=f"tcpwhy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from tcpwhy.diagnose import cli as diagnose_cli
    from tcpwhy.host import cli as host_cli
    from tcpwhy.lab import cli as lab_cli
    from tcpwhy.report import commands as report_commands

    report_commands.register(sub)
    diagnose_cli.register(sub)
    lab_cli.register(sub)
    host_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_BAD_INPUT
    try:
        status = args.func(args)
        sys.stdout.flush()
        return int(status or 0)
    except TcpwhyError as exc:
        print(f"tcpwhy: {exc.where}: {exc.reason}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        # The reader (head, less) went away: not an error for a pipeline.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("tcpwhy: interrupted", file=sys.stderr)
        return 130
