"""Command line: one sub-command per view; each stage's folder registers its own commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from tcpwhy import __version__
from tcpwhy.cli_helpers import refuse_overwriting_inputs, urls_copied
from tcpwhy.console import COLOR_CHOICES, set_color
from tcpwhy.errors import EXIT_BAD_INPUT, TcpwhyError

# The command line does no linear algebra, and numpy's OpenBLAS, left to its default, starts
# a thread per core that spins when numpy loads: a tenth of a second of CPU per command,
# measured, taken from the command's own threads on a two-core machine (ten `analyze` runs
# of a small capture: 3.1 s of CPU against 1.8). Set before the command modules import
# numpy; `import tcpwhy` (the library) leaves a notebook's BLAS alone.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

GROUPS = {
    "packets": "tcpwhy.report.commands",
    "conns": "tcpwhy.report.commands",
    "flow": "tcpwhy.report.commands",
    "demo": "tcpwhy.demo",
    "analyze": "tcpwhy.diagnose.cli",
    "explain": "tcpwhy.diagnose.cli",
    "lab": "tcpwhy.lab.cli",
    "host": "tcpwhy.host.cli",
    "watch": "tcpwhy.watch.cli",
}
"""Which module registers each command. Only the one named on the command line is imported
(the host commands pull in rich, a few hundredths of a second of start-up that a capture
command does not need; psutil and pyroute2 are imported only by the code that uses them); all
of them for --help or an unknown command."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcpwhy",
        description="Tells why TCP connections break: from captures and from a live Linux host.",
    )
    parser.add_argument("--version", action="version", version=f"tcpwhy {__version__}")
    _add_color(parser, "auto")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    rest = list(argv or [])
    while rest and rest[0].startswith("--color"):  # the one option before the command
        rest = rest[2:] if rest[0] == "--color" else rest[1:]
    wanted = GROUPS.get(rest[0] if rest else "")
    for module in dict.fromkeys(GROUPS.values()):
        if wanted is None or module == wanted:
            importlib.import_module(module).register(sub)
    _add_color_to_commands(parser)
    return parser


def _add_color(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--color",
        choices=COLOR_CHOICES,
        default=default,
        help="colour the text: auto (on a terminal, unless NO_COLOR is set; FORCE_COLOR colours "
        "pipes and files too), always, never (default: auto)",
    )


def _add_color_to_commands(parser: argparse.ArgumentParser) -> None:
    """--color after the command too (``tcpwhy analyze --color never x.pcap``): every command
    and view takes it, without a default that would hide one given before the command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_color(child, argparse.SUPPRESS)
                _add_color_to_commands(child)


MALLOC_MMAP_THRESHOLD = 32 << 20
"""Blocks the command's allocator maps on their own (glibc's largest dynamic value)."""
MALLOC_TRIM_THRESHOLD = 16 << 20
"""Free memory at the top of the command's heap that the allocator keeps mapped. 16 MB,
not 128: on a 3 M-SYN flood's `analyze` the 128 MB kept was 60 MB of its peak (640 to 650 MB
against 705 to 709), and no capture read slower for it (the per-chunk arrays that made a
dynamic threshold slow sit below the mmap threshold and are reused from the heap)."""


def tune_malloc() -> bool:
    """Fixes glibc's two thresholds for the command's process (True when set).

    Left dynamic, they start low and rise only as large blocks are freed, so the command's
    per-chunk and per-batch arrays were mapped afresh, or trimmed off the heap and mapped
    again, hundreds of times a capture, and the kernel zeroed every page anew: measured on
    the connection-heavy capture, `conns` 1.50 to 1.71 s with 0.46 to 0.62 s of system
    time, against 1.24 to 1.34 s and 0.13 to 0.30 s with these (interleaved, peak RSS 4 MB
    more; `analyze` 2.50 to 2.59 s against 1.91 to 2.20 s). A threshold the user set
    (``MALLOC_*_`` or ``GLIBC_TUNABLES``) is kept, and so is any other C library's
    allocator; `import tcpwhy` (the library) leaves a notebook's allocator alone."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
    except (OSError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # another C library: its allocator as it is
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)) and bool(
        libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)
    )


def small_pages() -> bool:
    """Asks numpy not to advise huge pages for the process's arrays from here on (True when
    done); every command asks it for its own process.

    numpy advises them for every array from 4 MB on; the kernel then zeroes and maps 2 MB
    at the first touch anywhere in it and, with its defragmentation on request (this
    host's setting, and a common one), compacts memory first when no 2 MB is free. On a
    host up for hours that compaction is most of `analyze`'s system time. Measured,
    interleaved, three runs each: the 3 M-SYN flood's `analyze` 2.31-2.37 s with 4 kB pages
    against 2.46-4.02 s (system time 0.9 s against 1.1-2.6 s, peak 610 against 636 MB),
    the connection-heavy capture's 1.56-1.73 s against 1.79-2.00 s, the tiled one's
    2.14-2.49 s against 2.23-2.53 s, for twice as many faults; `conns` peaks 10 to 15 MB
    lower in the same time. A choice the user made (``NUMPY_MADVISE_HUGEPAGE``) is kept,
    and the library (`import tcpwhy`) leaves a notebook's numpy alone."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        import numpy._core.multiarray as multiarray
    except ImportError:
        return False
    advise = getattr(multiarray, "_set_madvise_hugepage", None)
    if advise is None:
        return False
    advise(False)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc()
    small_pages()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0) if exc.code in (0, None) else EXIT_BAD_INPUT
    # the library warns (RuntimeWarning) where the command already prints the same text as one
    # `tcpwhy: FILE: warning: ...` line; Python's two-line form would only repeat it
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="tcpwhy")
    set_color(getattr(args, "color", None))
    try:
        refuse_overwriting_inputs(args)
        with urls_copied(args):
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
