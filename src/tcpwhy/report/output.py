"""`-o FILE` for the capture commands: the view goes to a file instead of standard output.

The file is written beside its final name and renamed into place when the
command succeeds, so an interrupted run never leaves half a report behind; a
directory that does not exist (or cannot be written) is one `tcpwhy: FILE:
reason` line with exit status 2 before any capture is read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable

from tcpwhy.errors import TcpwhyError


def add_output_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the output to FILE instead of standard output",
    )


def with_output(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`func` with standard output sent to `args.output` when it is given."""

    def run(args: argparse.Namespace) -> int:
        path = getattr(args, "output", None)
        if not path or path == "-":
            return func(args)
        where = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise TcpwhyError(path, "is a directory")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tcpwhy-", suffix=".part", dir=where)
        except OSError as exc:
            raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None
        saved = sys.stdout
        ok = False
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                sys.stdout = f
                try:
                    status = func(args)
                finally:
                    sys.stdout = saved
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
            ok = True
            return status
        except OSError as exc:
            raise TcpwhyError(path, f"cannot write: {exc.strerror or exc}") from None
        finally:
            if not ok and os.path.exists(tmp):
                os.unlink(tmp)

    return run


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
