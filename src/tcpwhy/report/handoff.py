"""Hand-off to Wireshark: `packets -w OUT` and `analyze --annotate OUT.pcapng`.

Both copy records out of the capture as they are in the file (bytes, timestamps, link
types; `capture.reader.iter_records`), in a second pass once the first has decided what
to copy: `packets -w` the frames its list shows (with `-Y`, those the filter matches),
`analyze --annotate` every frame, with a comment on each decisive frame of each finding.
Standard input is read twice too: a pipe is first spooled to an unlinked temporary file
put in its place (descriptor 0), so both passes, and every message, still say `<stdin>`.
The output is written beside its name and renamed into place (`writer.atomic_output`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from tcpwhy.errors import TcpwhyError

if TYPE_CHECKING:
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.diagnose.model import Report
    from tcpwhy.filter import DisplayFilter


def is_pcapng_name(path: str) -> bool:
    """pcapng for a name ending in .pcapng (also .pcapng.gz: written uncompressed), else pcap."""
    return path.lower().removesuffix(".gz").endswith(".pcapng")


# ---- standard input, twice ----------------------------------------------------------------


def rereadable_stdin() -> Callable[[], None]:
    """Make standard input readable again from its start; returns the rewind.

    A regular file (`< file`) is rewound in place; a pipe is copied to an unlinked temporary
    file that replaces descriptor 0, so the readers, which read "-" from descriptor 0,
    read it whole as often as they are asked to."""
    fd = sys.stdin.fileno()
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        start = os.lseek(fd, 0, os.SEEK_CUR)
    else:
        start = 0
        with tempfile.TemporaryFile(prefix="tcpwhy-stdin-") as spool:
            with os.fdopen(os.dup(fd), "rb", buffering=0) as pipe:
                shutil.copyfileobj(pipe, spool, 1 << 20)
            spool.flush()
            os.dup2(spool.fileno(), fd)

    def rewind() -> None:
        os.lseek(fd, start, os.SEEK_SET)

    rewind()
    return rewind


def rereadable(source: str) -> Callable[[], None] | None:
    """Make the capture readable twice; the rewind to call before the second pass (None
    when there is nothing to do: a regular file, or a path the reader will report).

    Standard input: `rereadable_stdin`. A pipe named as /dev/fd/N (a shell's `<(…)`) is
    spooled the same way onto descriptor N: opening the name again opens the spool from
    its start. A named pipe elsewhere cannot be replaced: an error that says so."""
    if source == "-":
        return rereadable_stdin()
    try:
        st = os.stat(source)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return None
    m = re.fullmatch(r"/(?:dev|proc/self)/fd/(\d+)", source)
    if m is None:
        raise TcpwhyError(
            source,
            "not a regular file: the capture is read twice here; give a file, or pipe it "
            "to standard input (-)",
        )
    fd = int(m.group(1))
    with tempfile.TemporaryFile(prefix="tcpwhy-pipe-") as spool:
        with os.fdopen(os.dup(fd), "rb", buffering=0) as pipe:
            shutil.copyfileobj(pipe, spool, 1 << 20)
        spool.flush()
        os.dup2(spool.fileno(), fd)
    return lambda: None


# ---- packets -w ---------------------------------------------------------------------------


def selected_frames(
    source: str,
    stats: CaptureStats,
    flt: DisplayFilter | None = None,
    limit: int | None = None,
) -> npt.NDArray[np.int64]:
    """The frame numbers `tcpwhy packets` lists for these options, sorted: TCP segments and
    the ICMP errors about them, those the display filter matches (decided exactly as the
    list decides it: per chunk, with the streams and analysis of the capture so far), the
    first `limit` of them."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.views import tracked_chunks

    tables = iter_tables(source, stats, reuse=True)
    # without a filter every frame is listed: no stream tracking needed
    chunks = (
        ((c.table, c.keep, c.icmp_keep) for c in tracked_chunks(
            tables, flt, first_ts_ns=lambda: stats.first_ts_ns, analysis=False
        ))
        if flt is not None
        else ((t, None, None) for t in tables)
    )  # fmt: skip
    parts: list[npt.NDArray[np.int64]] = []
    n = 0
    for t, keep, icmp_keep in chunks:
        if limit is not None and n >= limit:
            break
        frames = np.asarray(t["frame"], np.int64)
        icmp = None if t.icmp is None else np.asarray(t.icmp["frame"], np.int64)
        if keep is not None:
            frames = frames[keep]
        if icmp is not None and icmp_keep is not None:
            icmp = icmp[icmp_keep]
        chunk = np.sort(np.concatenate((frames, icmp))) if icmp is not None else frames.copy()
        if limit is not None:
            chunk = chunk[: limit - n]
        parts.append(chunk)
        n += len(chunk)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def write_selected(args: argparse.Namespace, flt: DisplayFilter | None, stats: CaptureStats) -> int:
    """`packets FILE [-Y FILTER] [-c N] -w OUT`: the listed packets as a capture, no list."""
    from tcpwhy.capture.reader import iter_records
    from tcpwhy.capture.writer import atomic_output, copy_records

    out = args.write
    if out == "-" and sys.stdout.isatty():
        raise TcpwhyError("-w", "not writing a capture to a terminal: redirect it or pipe it")
    with atomic_output(out) as f:
        rewind = rereadable(args.file)
        frames = selected_frames(args.file, stats, flt, args.count)
        if rewind is not None:
            rewind()
        copy_records(iter_records(args.file), f, out, is_pcapng_name(out), frames)
    return 0


# ---- analyze --annotate -------------------------------------------------------------------


def finding_comments(report: Report) -> dict[int, list[str]]:
    """Frame number → comments: one per decisive packet (timeline step) of each finding,
    `tcpwhy: KIND — what the packet means`, in the report's order."""
    comments: dict[int, list[str]] = {}
    for f in report.findings:
        for st in f.timeline:
            text = f"tcpwhy: {f.kind} — {st.note}" if st.note else f"tcpwhy: {f.kind}"
            got = comments.setdefault(st.frame, [])
            if text not in got:
                got.append(text)
    return comments


def check_annotate(args: argparse.Namespace) -> None:
    """`--annotate` copies one capture: one FILE (or -), not a fleet or several points."""
    files = list(args.files)
    if len(files) != 1 or (files[0] != "-" and os.path.isdir(files[0])):
        raise TcpwhyError(
            "--annotate", f"takes one capture file (or - for standard input), not {len(files)}"
        )
    if args.workers or args.scheduler:
        raise TcpwhyError("--annotate", "not with --workers or --scheduler")
    if args.annotate == "-":
        raise TcpwhyError("--annotate", "standard output carries the report: give a file name")


def with_annotate(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`func` (analyze) with `--annotate OUT` prepared: the output checked and opened beside
    its name before the capture is read, standard input made readable twice, and
    `args.annotate_to(report)` for `func` to call once it has the report."""

    def run(args: argparse.Namespace) -> int:
        out = getattr(args, "annotate", None)
        if out is None:
            return func(args)
        check_annotate(args)
        from tcpwhy.capture.writer import atomic_output

        with atomic_output(out) as f:
            rewind = rereadable(args.files[0])
            done: list[int] = []

            def annotate_to(report: Report) -> None:
                from tcpwhy.capture.reader import iter_records
                from tcpwhy.capture.writer import copy_records

                if rewind is not None:
                    rewind()
                source = args.files[0]
                copy_records(iter_records(source), f, out, True, None, finding_comments(report))
                done.append(1)

            args.annotate_to = annotate_to
            status = func(args)
            if not done:  # the command ended before its report (nothing to annotate)
                raise TcpwhyError("--annotate", "no report was made: nothing written")
            return status

    return run
