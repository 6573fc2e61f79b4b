"""`tcpwhy conns FILE FILE…`: connection records of several captures, paired across points.

The files are grouped as `tcpwhy analyze` groups them (`tcpwhy.diagnose.engine`): files
whose times follow one another are one rotated capture, joined into one timeline; files
that overlap in time were taken at different points of the path, each a capture point of
its own. Connections seen at several points are paired (`tcpwhy.diagnose.pairing`: by
ISNs and payload, so across NAT too) and written once, as the first capture point in the
order given saw them, with ``seen_at``: the capture points (each named as analyze names
it: its files joined by ", ") where the connection was seen. ``--no-pair`` writes every
point's records, each with its own point in ``seen_at``.

With one capture point (one file, or rotated files) no record carries ``seen_at``, so the
output is that of one capture. Several files are read whole before the first record (the
points must be known to pair them); one file is still written as it is read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import CaptureStats, PacketTable
from tcpwhy.filter import DisplayFilter

if TYPE_CHECKING:
    import pyarrow as pa

    from tcpwhy.tcp.records import ConnColumns, RecordOptions


@dataclass
class Point:
    """One capture point: its files (joined in time order), its table and its name."""

    files: list[str]
    table: PacketTable
    name: str
    first_ts_ns: int | None = None
    """Its first frame, of any protocol (``frame.time_relative`` counts from it)."""


def read_points(files: list[str], stats: list[CaptureStats], **options: Any) -> list[Point]:
    """The capture points of `files`, in the order given (analyze's rule: a file that starts
    before the previous one of its group ended is another point)."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.cli_helpers import shown
    from tcpwhy.diagnose.engine import _groups
    from tcpwhy.tcp.connections import reading_options

    how = reading_options(options)
    tables: list[tuple[str, PacketTable]] = []
    for f, st in zip(files, stats, strict=True):
        parts = list(iter_tables(f, st, **how))
        tables.append((f, PacketTable.concat(parts)))
    points = []
    for g in sorted(_groups(tables), key=min):
        names = [tables[i][0] for i in g]
        # named as the user named them: a URL, not the copy read (`cli_helpers.urls_copied`)
        label = ", ".join(map(shown, names))
        firsts = [t for i in g if (t := stats[i].first_ts_ns) is not None]
        first = min(firsts) if firsts else None
        points.append(Point(names, PacketTable.concat([tables[i][1] for i in g]), label, first))
    return points


def seen_at(
    points: list[Point], pair: bool, kept: list[set[int] | None] | None = None
) -> tuple[list[set[int]], list[dict[int, list[str]]]]:
    """Per point: the tcp.stream numbers not written there (the same connection was written
    at an earlier point), and the capture points of each stream seen at more than one.
    `kept`: per point, the streams a display filter keeps (None: all); a connection the
    filter drops at the earlier point is written at the later one, as analyze pairs only
    the connections its filter kept."""
    from tcpwhy.diagnose.context import Capture
    from tcpwhy.diagnose.pairing import match_streams, signatures

    dropped: list[set[int]] = [set() for _ in points]
    where: list[dict[int, list[str]]] = [{} for _ in points]
    if not pair or len(points) < 2:
        return dropped, where
    caps = [Capture(p.table, np.zeros(len(p.table), np.int16), p.files) for p in points]
    # which connections are the same is all a record needs (not the path's delays and
    # losses `pair_captures` measures): the pairing's signatures, matched point to point
    sigs = [signatures(c) for c in caps]
    for i in range(len(caps)):
        for j in range(i + 1, len(caps)):
            sids_a, sids_b = match_streams(sigs[i], sigs[j])
            na = caps[i].stream_numbers[sids_a].tolist()
            nb = caps[j].stream_numbers[sids_b].tolist()
            for sa, sb in zip(na, nb, strict=True):
                for k, s, other in ((i, sa, j), (j, sb, i)):
                    at = where[k].setdefault(int(s), [points[k].name])
                    if points[other].name not in at:
                        at.append(points[other].name)
            ka = kept[i] if kept is not None else None
            dropped[j].update(int(b) for a, b in zip(na, nb, strict=True) if ka is None or a in ka)
    return dropped, where


def point_batches(
    points: list[Point],
    stats: CaptureStats,
    flt: DisplayFilter | None,
    record_options: RecordOptions,
    pair: bool,
    icmp: list[dict[int, dict[str, int]]] | None = None,
    **options: Any,
) -> Iterator[tuple[int, ConnColumns, list[list[str]] | None]]:
    """The record batches to write: each with its capture point's index and its records'
    ``seen_at`` (None with one point)."""
    from tcpwhy.diagnose.engine import _limit_to_filter
    from tcpwhy.tcp.connections import iter_connection_columns

    keeps: list[npt.NDArray[np.int64] | None] = [
        None if flt is None else _limit_to_filter(p.table, flt, p.first_ts_ns)[1] for p in points
    ]
    kept = [None if k is None else {int(x) for x in k.tolist()} for k in keeps]
    dropped, where = seen_at(points, pair, kept)
    many = len(points) > 1
    base = 0  # record numbers (uids) go on from point to point: no uid repeats
    for k, p in enumerate(points):
        opts = dict(options)
        if icmp is not None:
            opts["icmp_counts"] = icmp[k]
        keep = keeps[k]
        gone = np.fromiter(dropped[k], np.int64, len(dropped[k]))
        top = base
        for c in iter_connection_columns([p.table], stats, **opts):
            streams = c["stream"]
            m = ~np.isin(streams, gone)
            if keep is not None:
                m &= np.isin(streams, keep)
            c.cols["uid"] = c.cols["uid"] + base
            if len(c):
                top = max(top, int(c.cols["uid"].max()) + 1)
            c = c.take(np.flatnonzero(m)).with_options(record_options)
            if not len(c):
                continue
            names = [where[k].get(int(s), [p.name]) for s in c["stream"].tolist()] if many else None
            yield k, c, names
        base = top


def add_seen_at(text: str, names: list[list[str]], fmt: str) -> str:
    """Lines of one batch in `fmt` with each record's ``seen_at`` added at the end."""
    if not text:
        return text
    lines = text.split("\n")
    for i, at in enumerate(names):
        line = lines[i]
        if fmt == "jsonl":
            lines[i] = f'{line[:-1]}, "seen_at": {json.dumps(at, ensure_ascii=False)}}}'
        elif fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow(["", "; ".join(at)])
            lines[i] = line + buf.getvalue()
        elif fmt == "table":
            lines[i] = f"{line}  seen at: {' | '.join(at)}"
    return "\n".join(lines)


def write_points(
    files: list[str],
    fmt: str,
    out: TextIO,
    stats: list[CaptureStats],
    flt: DisplayFilter | None,
    record_options: RecordOptions,
    pair: bool = True,
    **options: Any,
) -> None:
    """`tcpwhy conns FILE FILE…` in a text format (`tcpwhy.report.conns.FORMATS`)."""
    from tcpwhy.report.conns import ZEEK_FORMATS, write_head, write_tail
    from tcpwhy.report.conns_format import format_columns
    from tcpwhy.report.conns_icmp import with_icmp
    from tcpwhy.views import connection_batches

    if fmt in ZEEK_FORMATS:
        options.setdefault("boundaries", "zeek")
    icmp: list[dict[int, dict[str, int]]] | None = [] if fmt == "jsonl" else None
    n_points, batches = connection_batches(
        files, stats, flt, pair=pair, record_options=record_options, icmp=icmp, **options
    )
    many = n_points > 1
    write_head(out, fmt, record_options.local_nets is not None, ("seen_at",) if many else ())
    for k, c, names in batches:
        text = format_columns(c, fmt)
        if icmp is not None:
            text = with_icmp(text, c, icmp[k])
        if names is not None:
            text = add_seen_at(text, names, fmt)
        out.write(text)
    write_tail(out, fmt)


def write_points_parquet(
    files: list[str],
    path: str,
    stats: list[CaptureStats],
    flt: DisplayFilter | None,
    record_options: RecordOptions,
    pair: bool = True,
    **options: Any,
) -> int:
    """`tcpwhy conns FILE FILE… --format parquet -o PATH`: a ``seen_at`` list column is added
    after `conn_schema`'s columns when there are several capture points."""
    import pyarrow as pa

    from tcpwhy.report.parquet import ParquetSink, conn_schema, conn_table
    from tcpwhy.views import connection_batches

    n_points, batches = connection_batches(
        files, stats, flt, pair=pair, record_options=record_options, **options
    )
    schema: pa.Schema = conn_schema()
    many = n_points > 1
    if many:
        schema = schema.append(pa.field("seen_at", pa.list_(pa.string())))
    sink = ParquetSink(path, schema)
    ok = False
    try:
        for _, c, names in batches:
            table = conn_table(c)
            if names is not None:
                table = table.append_column("seen_at", pa.array(names, pa.list_(pa.string())))
            sink.write(table)
        ok = True
    finally:
        sink.close(ok)
    return sink.rows


def cmd_conns_points(args: Any, record_options: RecordOptions, options: dict[str, Any]) -> int:
    """`tcpwhy conns FILE FILE…`: the warnings of each file after the records."""
    import sys

    from tcpwhy.cli_helpers import report_stats
    from tcpwhy.filter import filter_from_args

    files = [args.file, *args.more]
    stats = [CaptureStats() for _ in files]
    flt = filter_from_args(args)
    pair = not args.no_pair
    if args.format == "parquet":
        from tcpwhy.report.parquet import need_output

        write_points_parquet(files, need_output(args), stats, flt, record_options, pair, **options)
    else:
        try:
            write_points(
                files, args.format, sys.stdout, stats, flt, record_options, pair, **options
            )
        finally:
            sys.stdout.flush()
    for f, st in zip(files, stats, strict=True):
        report_stats(f, st)
    return 0
