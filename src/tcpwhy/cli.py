"""Command line: one sub-command per view; each stage's folder registers its own commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from tcpwhy import __version__
from tcpwhy.errors import EXIT_BAD_INPUT, TcpwhyError

GROUPS = {
    "packets": "tcpwhy.report.commands",
    "conns": "tcpwhy.report.commands",
    "flow": "tcpwhy.report.commands",
    "demo": "tcpwhy.report.commands",
    "analyze": "tcpwhy.diagnose.cli",
    "explain": "tcpwhy.diagnose.cli",
    "lab": "tcpwhy.lab.cli",
    "host": "tcpwhy.host.cli",
    "watch": "tcpwhy.watch.cli",
}
"""Which module registers each command. Only the one named on the command line is imported
(the host and lab commands pull in rich, psutil and pyroute2: a tenth of a second of start-up
that a capture command does not need); all of them for --help or an unknown command."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpwhy",
        description="Tells why TCP connections break: from captures and from a live Linux host.",
    )
    parser.add_argument("--version", action="version", version=f"tcpwhy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    command = next(iter(argv), None) if argv else None
    wanted = GROUPS.get(command or "")
    for module in dict.fromkeys(GROUPS.values()):
        if wanted is None or module == wanted:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_BAD_INPUT
    # the library warns (RuntimeWarning) where the command already prints the same text as one
    # `tcpwhy: FILE: warning: ...` line; Python's two-line form would only repeat it
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="tcpwhy")
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
