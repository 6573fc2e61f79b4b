"""`-o FILE` for the capture commands: the view goes to a file instead of standard output.

The file is written beside its final name and renamed into place when the
command succeeds, so an interrupted run never leaves half a report behind; a
directory that does not exist (or cannot be written) is one `tcpwhy: FILE:
reason` line with exit status 2 before any capture is read.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable

from tcpwhy.capture.writer import atomic_output
from tcpwhy.cli_helpers import add_common_option


def add_output_argument(p: argparse.ArgumentParser) -> None:
    add_common_option(p, "output")


def with_output(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`func` with standard output sent to `args.output` when it is given."""

    def run(args: argparse.Namespace) -> int:
        path = getattr(args, "output", None)
        if not path or path == "-":
            return func(args)
        saved = sys.stdout
        # one writer for every output file: renamed into place on success, devices and
        # links written where they are
        with atomic_output(path) as raw:
            # surrogateescape, as standard output: a capture's file name that is not UTF-8
            # is written back as the bytes it was
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
            sys.stdout = text
            try:
                status = func(args)
            finally:
                sys.stdout = saved
                text.flush()
                text.detach()
        return status

    return run
