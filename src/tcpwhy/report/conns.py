"""`tcpwhy conns`: one record per connection (table, jsonl, csv, Zeek conn.log)."""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast

import numpy as np

from tcpwhy.capture.options import add_reassembly_option
from tcpwhy.cli_helpers import Subcommands, positive_int, report_stats
from tcpwhy.decode.table import CaptureStats, endpoint_text
from tcpwhy.filter import DisplayFilter, add_filter_argument
from tcpwhy.views import built

if TYPE_CHECKING:  # the builder loads compiled code: imported where records are made
    from tcpwhy.tcp.connections import BatchJob
    from tcpwhy.tcp.records import ConnColumns, ConnRecord, RecordOptions

FORMATS = ("table", "jsonl", "csv", "zeek", "zeek-json", "parquet")
TEXT_FORMATS = FORMATS[:-1]
"""The formats written as lines of text (Parquet is a binary file of columns)."""
ZEEK_FORMATS = ("zeek", "zeek-json")
"""Formats of Zeek's own logs: connections are cut where Zeek would cut them."""

CSV_FIELDS = (
    "stream",
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "start",
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "irtt",
    "retransmissions",
    "zero_windows",
    "orig_state",
    "resp_state",
    "end",
    "conn_state",
    "history",
    "orientation",
    "server_name",
    "community_id",
)
"""csv columns; with ``--local-nets``, `LOCAL_FIELDS` come before `community_id`.
``server_name`` is empty for a connection without one."""

LOCAL_FIELDS = ("local_orig", "local_resp")


def csv_fields(local: bool = False) -> tuple[str, ...]:
    """The csv columns, with ``local_orig`` and ``local_resp`` when local networks are set."""
    return (*CSV_FIELDS[:-1], *LOCAL_FIELDS, CSV_FIELDS[-1]) if local else CSV_FIELDS


ZEEK_FIELDS = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("ip_proto", "count"),
    ("community_id", "string"),
)
"""conn.log columns in Zeek's order (base/protocols/conn, then policy/protocols/conn/
community-id-logging's ``community_id``)."""


def _zeek_bool(v: bool | None) -> str:
    return "-" if v is None else ("T" if v else "F")


def zeek_row(r: ConnRecord) -> list[str]:
    """A conn.log line: duration and byte counts are unset when the duration is zero, as Zeek does."""
    timed = r.duration > 0
    return [
        f"{r.start:.6f}",
        r.uid,
        r.orig_h,
        str(r.orig_p),
        r.resp_h,
        str(r.resp_p),
        "tcp",
        "-",
        f"{r.duration:.6f}" if timed else "-",
        str(r.orig_bytes) if timed else "-",
        str(r.resp_bytes) if timed else "-",
        r.conn_state,
        _zeek_bool(r.local_orig),
        _zeek_bool(r.local_resp),
        str(r.missed_bytes),
        r.history or "-",
        str(r.orig_pkts),
        str(r.orig_ip_bytes),
        str(r.resp_pkts),
        str(r.resp_ip_bytes),
        "-",
        "6",
        r.community_id,
    ]


def zeek_json(r: ConnRecord) -> dict[str, Any]:
    """A line of Zeek's JSON conn.log (``LogAscii::use_json``) as a dict: Zeek's keys in its
    column order, ``ts`` in epoch seconds, and the fields Zeek leaves unset left out (service,
    tunnel_parents; duration and byte counts of a zero duration; an empty history;
    local_orig/local_resp without local networks)."""
    d: dict[str, Any] = {
        "ts": round(r.start, 6),
        "uid": r.uid,
        "id.orig_h": r.orig_h,
        "id.orig_p": r.orig_p,
        "id.resp_h": r.resp_h,
        "id.resp_p": r.resp_p,
        "proto": "tcp",
    }
    if r.duration > 0:
        d["duration"] = round(r.duration, 6)
        d["orig_bytes"] = r.orig_bytes
        d["resp_bytes"] = r.resp_bytes
    d["conn_state"] = r.conn_state
    if r.local_orig is not None:
        d["local_orig"] = r.local_orig
        d["local_resp"] = r.local_resp
    d["missed_bytes"] = r.missed_bytes
    if r.history:
        d["history"] = r.history
    d["orig_pkts"] = r.orig_pkts
    d["orig_ip_bytes"] = r.orig_ip_bytes
    d["resp_pkts"] = r.resp_pkts
    d["resp_ip_bytes"] = r.resp_ip_bytes
    d["ip_proto"] = 6
    d["community_id"] = r.community_id
    return d


def zeek_json_line(r: ConnRecord) -> str:
    """`zeek_json` as Zeek writes it: compact JSON, one object per line."""
    return json.dumps(zeek_json(r), ensure_ascii=False, separators=(",", ":"))


def _zeek_stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(t))


def _zeek_header(out: TextIO, opened: float | None) -> None:
    opened = time.time() if opened is None else opened
    out.write("#separator \\x09\n")
    out.write("#set_separator\t,\n")
    out.write("#empty_field\t(empty)\n")
    out.write("#unset_field\t-\n")
    out.write("#path\tconn\n")
    out.write(f"#open\t{_zeek_stamp(opened)}\n")
    out.write("#fields\t" + "\t".join(f for f, _ in ZEEK_FIELDS) + "\n")
    out.write("#types\t" + "\t".join(t for _, t in ZEEK_FIELDS) + "\n")


def _zeek_footer(out: TextIO) -> None:
    out.write(f"#close\t{_zeek_stamp(time.time())}\n")


def write_zeek(records: Iterable[ConnRecord], out: TextIO, opened: float | None = None) -> int:
    """Zeek's ASCII log format (TSV with its `#` headers), path `conn`, from records."""
    _zeek_header(out, opened)
    n = 0
    for r in records:
        out.write("\t".join(zeek_row(r)) + "\n")
        n += 1
    _zeek_footer(out)
    return n


def read_zeek(lines: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a Zeek ASCII log as dicts keyed by `#fields` (a reader for round trips)."""
    fields: list[str] = []
    rows = []
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#fields\t"):
            fields = line.split("\t")[1:]
        elif line.startswith("#") or not line:
            continue
        else:
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def _csv_value(v: object) -> object:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6f}"
    return v


TABLE_HEADER = (
    f"{'stream':>6}  {'originator':<28} {'responder':<28} {'duration':>10} "
    f"{'pkts o/r':>11} {'bytes o/r':>17}  {'state':<6} {'history':<14} end\n"
)


def table_line(r: ConnRecord) -> str:
    o = endpoint_text(r.orig_h, r.orig_p)
    p = endpoint_text(r.resp_h, r.resp_p)
    pk = f"{r.orig_pkts}/{r.resp_pkts}"
    by = f"{r.orig_bytes}/{r.resp_bytes}"
    return (
        f"{r.stream:>6}  {o:<28} {p:<28} {r.duration:>10.3f} {pk:>11} {by:>17}  "
        f"{r.conn_state:<6} {r.history:<14} {r.end} "
        f"[{r.orig_state}/{r.resp_state}]\n"
    )


def write_table(records: Iterable[ConnRecord], out: TextIO, live: bool = False) -> None:
    out.write(TABLE_HEADER)
    for r in records:
        out.write(table_line(r))
        if live:
            out.flush()


def record_lines(records: Iterable[ConnRecord], fmt: str) -> str:
    """The data lines of `fmt` (no headers), one record at a time: the readable definition of
    what the columnar writers (`format_columns`) write, and their fallback. The csv lines have
    ``local_orig`` and ``local_resp`` when the records have them."""
    if fmt == "jsonl":
        return "".join(json.dumps(r.as_json(), ensure_ascii=False) + "\n" for r in records)
    if fmt == "csv":
        records = list(records)
        fields = csv_fields(bool(records) and records[0].local_orig is not None)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for r in records:
            d = r.as_json()
            w.writerow([_csv_value(d.get(f, "")) for f in fields])
        return buf.getvalue()
    if fmt == "zeek":
        return "".join("\t".join(zeek_row(r)) + "\n" for r in records)
    if fmt == "zeek-json":
        return "".join(zeek_json_line(r) + "\n" for r in records)
    return "".join(table_line(r) for r in records)


def filtered_jobs(
    source: str, stats: CaptureStats, flt: DisplayFilter, **options: Any
) -> Iterator[BatchJob]:
    """Connections with at least one packet the filter matches (Wireshark's Conversations
    "limit to display filter"), each analysed whole: batches still to build (`BatchJob`),
    for a writer that builds them on a thread of its own as without a filter. A batch keeps
    the connections that had a matching packet by the chunk that finished it, whenever it
    is built: the same records as built at once."""
    from tcpwhy.arrays import extend_filled
    from tcpwhy.capture import iter_tables
    from tcpwhy.tcp.connections import ConnectionBuilder, reading_options
    from tcpwhy.views import tracked_chunks

    b = ConnectionBuilder(**options)
    # per tcp.stream so far: the chunk in which a packet of it first matched, -1 none yet (a
    # set of the numbers, turned into an array for every batch built in the reading thread,
    # took a 1.5 M-SYN flood 7.5 s and 880 MB where every SYN matched)
    hit = np.zeros(0, np.int32)
    have = 0  # streams with a place in `hit` (the room past them is unset)
    chunk = 0

    def kept(job: BatchJob, by: int) -> BatchJob:
        def build() -> ConnColumns:
            c = job()
            # (a later chunk only sets streams that had no match yet, to a later number)
            h = hit[c["stream"]]
            m = (h >= 0) & (h <= by)
            return c if m.all() else c.take(m)

        return build

    tables = iter_tables(source, stats, reuse=True, prefetch=True, **reading_options(options))
    for ch in tracked_chunks(
        tables, flt, first_ts_ns=lambda: stats.first_ts_ns, analysis=False, tracker=b.tracker
    ):
        assert ch.keep is not None
        if b.tracker.next_stream > have:  # every stream so far has a place
            hit = extend_filled(hit, have, b.tracker.next_stream, -1)
            have = b.tracker.next_stream
        got = ch.streams["stream"][ch.keep]
        if ch.icmp_keep is not None:  # ICMP errors about TCP select their streams too
            assert b.tracker.icmp_out is not None
            st = b.tracker.icmp_out["stream"][ch.icmp_keep]
            got = np.concatenate([got, st[st >= 0]])
        got = got[hit[got] < 0]
        hit[got] = chunk
        yield from (kept(j, chunk) for j in b.feed_jobs(ch.table, streams=ch.streams))
        chunk += 1
    yield from (kept(j, chunk) for j in b.finish_jobs())
    stats.warnings.extend(b.warnings)


def write_conns(
    source: str,
    fmt: str = "table",
    out: TextIO | None = None,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
    record_options: RecordOptions | None = None,
    **options: Any,
) -> CaptureStats:
    """Write the connection records of a capture; the Zeek formats use Zeek's boundaries.
    `record_options`: uid seed, Community ID seed and local networks (`RecordOptions`)."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    if fmt in ZEEK_FORMATS:
        options.setdefault("boundaries", "zeek")
    from tcpwhy.report.conns_format import format_columns, format_columns_pieces
    from tcpwhy.tcp.records import DEFAULT_OPTIONS
    from tcpwhy.views import connection_batches

    ropts = record_options if record_options is not None else DEFAULT_OPTIONS
    # JSON lines name the ICMP errors about a connection (`conns_icmp`); other formats as before
    from tcpwhy.report.conns_icmp import with_icmp

    counts: list[dict[int, dict[str, int]]] | None = [] if fmt == "jsonl" else None
    live = source == "-"
    binary = _utf8_buffer(out)
    # a file: batches built, formatted and written by a thread while the next ones are read
    # (the kernels release the GIL, and so does writing); live input: at once, flushed
    behind = _BehindWriter(binary, fmt) if binary is not None and not live else None
    # the records as `Capture.connections` has them, written batch by batch as they finish
    # (one file, with a filter or without, handed over unbuilt when the thread is there to
    # build them)
    _, batches = connection_batches(
        [source],
        [stats],
        flt,
        record_options=ropts,
        icmp=counts,
        unbuilt=behind is not None,
        **options,
    )
    # the first batch before the head: a file that cannot be read is one error line, with
    # no column heads left on the output above it
    first = next(batches, None)
    icmp = counts[0] if counts else {}
    write_head(out, fmt, ropts.local_nets is not None)
    text_behind = True  # text may sit in `out`'s buffer: flushed before bytes go under it
    try:
        for _, item, _ in itertools.chain([first] if first is not None else [], batches):
            if binary is not None and not icmp:  # the kernel's bytes as they are (no str)
                if behind is not None:
                    if text_behind:
                        out.flush()
                        text_behind = False
                    behind.put(item)
                    continue
                out.flush()
                for raw in format_columns_pieces(built(item), fmt):
                    binary.write(raw)
                binary.flush()
                continue
            if behind is not None:
                behind.drain()
            c = built(item)
            text = format_columns(c, fmt)
            if icmp:
                text = with_icmp(text, c, icmp)
            if text:
                out.write(text)
                text_behind = True
                if live:
                    out.flush()
        if behind is not None:
            behind.drain()
    finally:
        if behind is not None:
            behind.close()
    write_tail(out, fmt)
    return stats


def write_head(out: TextIO, fmt: str, local: bool, extra: tuple[str, ...] = ()) -> None:
    """What a text format writes before its records: the CSV header row (with `extra`
    fields after the record's), Zeek's log header, the table's column heads."""
    if fmt == "csv":
        csv.writer(out, lineterminator="\n").writerow([*csv_fields(local), *extra])
    elif fmt == "zeek":
        _zeek_header(out, None)
    elif fmt == "table":
        out.write(TABLE_HEADER)


def write_tail(out: TextIO, fmt: str) -> None:
    """What a text format writes after its records (Zeek's ``#close`` line)."""
    if fmt == "zeek":
        _zeek_footer(out)


class _BehindWriter:
    """Builds (if handed over unbuilt), formats and writes batches of records in one thread
    of its own, in the order given: at most `DEPTH` batches to format queued, and the text
    of at most `TEXT_JOBS` batches the caller formatted itself (`put`), which the thread
    writes in turn.

    The caller reads on meanwhile: on a capture of millions of one-packet connections
    building, formatting and writing the records is half of the work, and it overlaps the
    rest on a second core. The kernel's buffer is the writing thread's own
    (`format_columns_pieces`), reused piece after piece by that thread alone."""

    DEPTH = 4
    """Four, not two: a flood's connections end in bursts (a second's unanswered SYNs at
    once), and with two the caller formatted 40% of the batches itself while the thread
    waited for work between bursts (flood 4.9 to 5.2 s against 5.6 to 6.3 s, 15 MB more)."""

    TEXT_JOBS = 2
    """Two: a flood's batch is 6 to 10 MB of JSON lines, held as bytes until the thread
    writes it, and a file on disk takes them slower than /dev/null. With four (the bound
    before), the 3 M-SYN flood's `conns --format jsonl` peaked at 487 to 510 MB written to a
    file (478 to 494 MB to /dev/null); with two, at 474 to 482 MB (471 to 475 MB), its time
    to /dev/null alike (medians 4.9 s) and to a file about a tenth longer (6.3 s against
    5.8 s: the caller waits for the batches queued before its text); with one, 465 to 470
    MB and a fifth longer. Interleaved runs on this project's 2-core machine."""

    def __init__(self, binary: BinaryIO, fmt: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.binary, self.fmt = binary, fmt
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tcpwhy-conns-writer")
        # the jobs queued, each with whether it formats a batch (else it writes text)
        self.pending: list[tuple[Any, bool]] = []
        self.started = False

    def _write(self, c: ConnColumns | Callable[[], ConnColumns]) -> None:
        from tcpwhy.report.conns_format import format_columns_pieces

        for raw in format_columns_pieces(built(c), self.fmt):
            self.binary.write(raw)

    def put(self, c: ConnColumns | Callable[[], ConnColumns]) -> None:
        """Queues a batch (raising what the thread raised). When the thread has `DEPTH`
        batches to format, the caller builds and formats this one itself meanwhile and
        queues its text for the thread to write after them: on a SYN flood formatting is
        the longer half of the work, and the caller used to wait for the thread on an idle
        core, first for every batch (2 of 7.6 s), then for the batches before its own (1 of
        7 s). It waits only while `TEXT_JOBS` texts are queued already."""
        from tcpwhy.report.conns_format import format_columns_pieces

        self.started = True
        while self.pending and self.pending[0][0].done():
            self.pending.pop(0)[0].result()
        if sum(formats for _, formats in self.pending) < self.DEPTH:
            self.pending.append((self.pool.submit(self._write, c), True))
            return
        # copies: the caller's formatting buffer is its own, reused by its next piece
        text = [bytes(raw) for raw in format_columns_pieces(built(c), self.fmt)]
        while sum(not formats for _, formats in self.pending) >= self.TEXT_JOBS:
            self.pending.pop(0)[0].result()
        if text:
            self.pending.append((self.pool.submit(self.binary.writelines, text), False))

    def drain(self) -> None:
        """Waits until every queued batch is written (raising the first error)."""
        while self.pending:
            self.pending.pop(0)[0].result()
        if self.started:
            self.binary.flush()

    def close(self) -> None:
        """Stops the thread once the batches queued are written (after an error of the
        caller too: the records built before it are written, as without the thread)."""
        self.pool.shutdown(wait=True)


def _utf8_buffer(out: TextIO) -> BinaryIO | None:
    """The binary stream under a UTF-8 text stream, None for any other: lines written there
    as bytes are the same bytes the text stream would write."""
    raw = getattr(out, "buffer", None)
    enc = getattr(out, "encoding", None)
    if raw is None or not enc or codecs.lookup(enc).name != "utf-8":
        return None
    return cast(BinaryIO, raw)


def cmd_conns(args: argparse.Namespace) -> int:
    from tcpwhy.filter import filter_from_args
    from tcpwhy.tcp.records import RecordOptions
    from tcpwhy.views import connection_options

    stats = CaptureStats()
    options = connection_options(  # the rule `Capture.connections` follows too
        args.boundaries,
        zeek_format=args.format in ZEEK_FORMATS,
        check_checksums=args.check_checksums,
        ignore_checksums=getattr(args, "ignore_checksums", False),
        max_active=args.max_active,
    )
    ropts = RecordOptions(
        uid_seed=args.seed, community_id_seed=args.community_id_seed, local_nets=args.local_nets
    )
    if getattr(args, "more", None):  # several files: capture points, paired (`conns_points`)
        from tcpwhy.report.conns_points import cmd_conns_points

        return cmd_conns_points(args, ropts, options)
    if args.format == "parquet":  # a file written from the columns (`tcpwhy.report.parquet`)
        from tcpwhy.report.parquet import need_output, write_conns_parquet

        write_conns_parquet(
            args.file,
            need_output(args),
            stats,
            flt=filter_from_args(args),
            record_options=ropts,
            **options,
        )
        report_stats(args.file, stats)
        return 0
    try:
        write_conns(
            args.file,
            args.format,
            stats=stats,
            flt=filter_from_args(args),
            record_options=ropts,
            **options,
        )
    finally:
        sys.stdout.flush()
    report_stats(args.file, stats)
    return 0


def _u16(text: str) -> int:
    """argparse type for the Community ID seed: 0 to 65535."""
    v = int(text)
    if not 0 <= v <= 0xFFFF:
        raise argparse.ArgumentTypeError("must be from 0 to 65535")
    return v


def _local_nets(text: str) -> Any:
    """argparse type for --local-nets: CIDR networks, comma-separated (`parse_local_nets`)."""
    from tcpwhy.tcp.records import parse_local_nets

    try:
        return parse_local_nets(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: Subcommands) -> None:
    """Registers `conns`."""
    p = sub.add_parser(
        "conns",
        help="one record per TCP connection: states, how it ended, Zeek conn_state/history",
        description=(
            "One record per TCP connection (a Wireshark tcp.stream): endpoints, counters, "
            "final RFC 9293 state of each side, how it ended, and Zeek's conn_state and "
            "history. --format zeek writes a Zeek conn.log, --format zeek-json the same as "
            "Zeek's JSON logs (both cut connections where Zeek would)."
        ),
    )
    p.add_argument("file", metavar="FILE", help="capture file, or - for standard input")
    p.add_argument(
        "more",
        nargs="*",
        metavar="FILE",
        help="more captures: rotated files are joined in time order; files that overlap in "
        "time are other capture points, whose connections seen at several points are "
        "written once, with seen_at (docs/conns.md)",
    )
    add_reassembly_option(p)
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument(
        "--no-pair",
        action="store_true",
        help="with several capture points: write every point's records (each with its own "
        "point in seen_at) instead of pairing them",
    )
    p.add_argument(
        "--boundaries",
        choices=("stream", "zeek"),
        help="one record per tcp.stream (default), or cut where Zeek's timers would "
        "(default for --format zeek and zeek-json)",
    )
    csum = p.add_mutually_exclusive_group()
    csum.add_argument(
        "--check-checksums",
        action="store_true",
        help="drop packets with bad checksums, as Zeek does without -C (the default with "
        "--boundaries zeek and the Zeek formats)",
    )
    csum.add_argument(
        "-C",
        "--ignore-checksums",
        action="store_true",
        help="count packets whatever their checksums, as Zeek's -C (captures from a host "
        "with checksum offload)",
    )
    p.add_argument(
        "--max-active",
        type=positive_int,
        metavar="N",
        help="connections held in memory at once before the idlest are written out early "
        "(default 500000)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="make the uids from N, the same on every run (default: random, new each run)",
    )
    p.add_argument(
        "--community-id-seed",
        type=_u16,
        default=0,
        metavar="N",
        help="seed of the Community ID hashes (default 0, as Zeek, Suricata and Elastic use)",
    )
    p.add_argument(
        "--local-nets",
        type=_local_nets,
        metavar="CIDR,...",
        help="networks whose addresses are local: sets local_orig and local_resp (unset "
        "without it); 'private' stands for Zeek's Site::private_address_space, which "
        "Zeek 6 and later count as local by default",
    )
    add_filter_argument(p)
    p.set_defaults(func=cmd_conns)
