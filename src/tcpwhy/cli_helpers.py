"""What several commands share on the command line: the argparse types of positive numbers,
the options they take alike (``-o FILE``, ``-Y FILTER``), the one-capture rule (FILE or
``-r FILE``), ``-o FILE`` on a command registered elsewhere, URLs read as files, and a
capture's warnings on stderr. Each stage's folder registers its own commands
(`tcpwhy.cli`); they take these from here rather than from one another."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeAlias

from tcpwhy.errors import TcpwhyError

if TYPE_CHECKING:
    from tcpwhy.decode.table import CaptureStats

Command = Callable[[argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What each command module's ``register`` adds its commands to (`tcpwhy.cli`)."""


def positive_int(text: str) -> int:
    """argparse type for counts: a whole number of at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


LARGEST_FLOAT = 1e9
"""The largest number `positive_float` takes: seconds (31 years) and megabytes are the
quantities it reads; sleeping, waiting and nanosecond arithmetic fail beyond about 9e9 s."""


def positive_float(text: str) -> float:
    """argparse type for durations and sizes: a number above 0, at most `LARGEST_FLOAT`
    (neither NaN nor infinity)."""
    return _float(text, zero=False)


def nonnegative_float(text: str) -> float:
    """argparse type for durations where 0 turns something off (``watch --summary-every 0``):
    0 or a number above, at most `LARGEST_FLOAT` (neither NaN nor infinity)."""
    return _float(text, zero=True)


def _float(text: str, *, zero: bool) -> float:
    """`text` as a number above 0 (or 0 itself, with `zero`), at most `LARGEST_FLOAT`."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 if zero else v > 0):
        raise argparse.ArgumentTypeError("must be 0 or more" if zero else "must be positive")
    if not v <= LARGEST_FLOAT:
        raise argparse.ArgumentTypeError(f"must be at most {LARGEST_FLOAT:.0f}")
    return v


COMMON_OPTIONS = {
    "output": ("-o", "--output", "FILE", "write the output to FILE instead of standard output"),
    "display_filter": (
        "-Y",
        "--display-filter",
        "FILTER",
        "Wireshark display filter, e.g. 'tcp.port == 443 and tcp.analysis.retransmission'",
    ),
}
"""The options several commands take alike, by the name they are parsed to: the short and
long option, the value's name and the help (the same text in every command's --help)."""


def add_common_option(p: argparse.ArgumentParser, dest: str) -> None:
    """One of `COMMON_OPTIONS` on a command."""
    short, long, metavar, text = COMMON_OPTIONS[dest]
    p.add_argument(short, long, dest=dest, metavar=metavar, help=text)


INPUT_ARGS = ("file", "files", "more", "read_file", "read", "kernel_trace")
"""The parsed arguments that name files a command reads (any command's)."""
OUTPUT_FLAGS = {"output": "-o", "write": "-w", "annotate": "--annotate"}
"""The parsed arguments that name files a command writes, and their options."""


def refuse_overwriting_inputs(args: argparse.Namespace) -> None:
    """An output that is one of the command's own inputs, or another of its outputs, or that
    has an empty name, is refused before anything is read or written: `conns -o trace.pcap
    trace.pcap` replaced the capture with its table, `analyze --annotate x.pcapng -o
    x.pcapng` the annotated capture with the report."""
    for name, flag in (*OUTPUT_FLAGS.items(), ("parquet", "--parquet")):
        if getattr(args, name, None) == "":
            # `-o "$OUT"` with OUT unset: the output went to standard output, and
            # `--parquet ""` was no option at all, while the user waits for the file
            raise TcpwhyError(flag, "an empty name: give a path")
    reads = _inputs(args)
    outs: list[tuple[str, str]] = []
    for name in OUTPUT_FLAGS:
        out = getattr(args, name, None)
        if not isinstance(out, str) or out == "-":
            continue
        for r in reads:
            if r != "-" and _same_file(out, r):
                raise TcpwhyError(out, f"is also read by this command ({r}): not overwritten")
        for other, was in outs:
            # the second may not exist yet: the same path, or the same file by another name
            if os.path.realpath(out) == os.path.realpath(was) or _same_file(out, was):
                raise TcpwhyError(
                    out,
                    f"is named by both {OUTPUT_FLAGS[other]} and {OUTPUT_FLAGS[name]}: one would be lost",
                )
        outs.append((name, out))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either is missing (a new output), a URL, or unreadable
        return False


URL_COMMANDS = ("conns", "packets", "flow", "watch")
"""The commands whose URL inputs `urls_copied` reads (`analyze` copies its own, where a
directory URL is a fleet). `watch -r URL` replays the capture as it was when copied."""

SHOWN_AS: dict[str, str] = {}
"""The local copy of each URL a command was given -> that URL, for every line and field that
names an input (`shown`)."""


def shown(path: str) -> str:
    """An input as the user named it: the URL of a local copy, else the path itself."""
    return SHOWN_AS.get(path, path)


@contextmanager
def urls_copied(args: argparse.Namespace) -> Iterator[None]:
    """Runs a command of `URL_COMMANDS` with its URL inputs (``file://``, ``s3://`` with
    fsspec) copied to local files first, as `analyze` and `tcpwhy.open` copy them
    (`tcpwhy.api._Sources`), and its errors and warnings naming the URL: `conns s3://…` said
    it could not read what `analyze s3://…` read. The copies are removed afterwards."""
    urls = [v for v in _inputs(args) if "://" in v]
    if args.command not in URL_COMMANDS or not urls:
        yield
        return
    from tcpwhy.api import _Sources

    src = _Sources(urls)
    try:
        local = dict(zip(urls, src.command_paths(), strict=True))
        for name in INPUT_ARGS:
            v = getattr(args, name, None)
            if isinstance(v, list):
                setattr(args, name, [local.get(x, x) if isinstance(x, str) else x for x in v])
            elif isinstance(v, str):
                setattr(args, name, local.get(v, v))
        SHOWN_AS.update(src.names)
        try:
            yield
        except TcpwhyError as exc:
            exc.where = shown(exc.where)
            raise
    finally:
        src.close()


def _inputs(args: argparse.Namespace) -> list[str]:
    """The names of the files a command reads (`INPUT_ARGS`)."""
    out: list[str] = []
    for name in INPUT_ARGS:
        v = getattr(args, name, None)
        out += [x for x in v if isinstance(x, str)] if isinstance(v, list) else [v] if v else []
    return out


def report_stats(source: str, stats: CaptureStats) -> None:
    """Warnings and the non-TCP summary go to stderr, after the view."""
    name = "<stdin>" if source == "-" else shown(source)
    for w in stats.warnings:
        print(f"tcpwhy: {name}: warning: {w}", file=sys.stderr)
    line = stats.skipped_line()
    if line:
        print(line, file=sys.stderr)


def one_file(p: argparse.ArgumentParser, func: Command) -> Command:
    """`func` with `args.file` taken from FILE or `-r FILE` (exactly one of them)."""

    def run(args: argparse.Namespace) -> int:
        if (args.file is None) == (args.read_file is None):
            p.error("give the capture once: FILE or -r FILE")
        if args.file is None:
            args.file = args.read_file
        return func(args)

    return run


def unless_parquet(func: Command) -> Command:
    """`with_output(func)`, except for ``--format parquet``, which writes `-o FILE` itself
    (binary, and renamed into place the same way)."""
    from tcpwhy.report.output import with_output

    text = with_output(func)

    def run(args: argparse.Namespace) -> int:
        return func(args) if getattr(args, "format", "") == "parquet" else text(args)

    return run


def add_output(p: argparse.ArgumentParser) -> None:
    """`-o FILE` on a command registered elsewhere (its own function runs unchanged)."""
    add_common_option(p, "output")
    p.set_defaults(func=unless_parquet(p.get_default("func")))
