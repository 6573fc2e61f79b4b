"""`tcpwhy analyze FILE…` (findings from captures) and `tcpwhy explain "MESSAGE"`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tcpwhy.filter import add_filter_argument


def _positive_float(text: str) -> float:
    v = float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return v


@contextmanager
def _progress() -> Iterator[Callable[[str, int | None, int | None], None] | None]:
    """A progress bar on stderr (bytes read of the captures, then the diagnosis step), only
    when stderr is a terminal; it disappears when done."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("tcpwhy: {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def update(step: str, done: int | None, total: int | None) -> None:
            bar.update(task, description=step, completed=done or 0, total=total)

        yield update


def cmd_analyze(args: argparse.Namespace) -> int:
    from tcpwhy.diagnose.engine import diagnose_files
    from tcpwhy.diagnose.registry import Settings
    from tcpwhy.diagnose.render import to_json, write_text
    from tcpwhy.filter import filter_from_args

    settings = Settings(close_wait_s=args.close_wait, fin_wait_2_s=args.fin_wait_2)
    flt = filter_from_args(args)
    with _progress() as progress:
        report = diagnose_files(args.files, settings, progress, flt)
    if args.format == "json":
        sys.stdout.write(to_json(report) + "\n")
    else:
        write_text(report, sys.stdout)
    return report.exit_status()


def cmd_explain(args: argparse.Namespace) -> int:
    from tcpwhy.diagnose.explain import explain, to_json, write_text

    message = " ".join(args.message)
    matches = explain(message)
    if args.format == "json":
        sys.stdout.write(to_json(message, matches) + "\n")
    else:
        write_text(message, matches, sys.stdout)
    return 0 if matches else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser(
        "analyze",
        help="diagnose a capture: why connections broke and what to change",
        description=(
            "Diagnose TCP connection failures in one or more captures (pcap, pcapng, gzip). "
            "Rotated files are joined in time order; files that overlap in time (the two ends "
            "of one path) are diagnosed side by side. Exit status: 0 nothing of severity "
            "warning or above, 1 such findings, 2 error."
        ),
    )
    a.add_argument("files", nargs="+", metavar="FILE", help="capture files")
    a.add_argument("--format", choices=("text", "json"), default="text")
    add_filter_argument(a)
    a.add_argument(
        "--close-wait",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="report CLOSE_WAIT held longer than S seconds (or until the capture ends); default 10",
    )
    a.add_argument(
        "--fin-wait-2",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="report FIN_WAIT_2 held longer than S seconds; default 5",
    )
    a.set_defaults(func=cmd_analyze)

    e = sub.add_parser(
        "explain",
        help="which connection failures produce an error message, and how to tell them apart",
        description=(
            "Look up an error message (Java, Go, Python, Node.js, curl, nginx): the failure "
            "patterns that produce it, how to tell them apart, and what to capture or check. "
            "No capture needed."
        ),
    )
    e.add_argument("message", nargs="+", help='the error text, e.g. "Broken pipe"')
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.set_defaults(func=cmd_explain)
