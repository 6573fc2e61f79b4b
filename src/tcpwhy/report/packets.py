"""`tcpwhy packets`: the packet list as Wireshark's list pane shows it.

ICMP and ICMPv6 errors about TCP (the tables' `icmp` rows) are listed in capture
order among the TCP packets, with the error's own addresses as Source and
Destination and tshark's ICMP Info text; a display filter sees their ICMP fields
and the quoted segment's fields (`tcpwhy.filter.icmp_fields`).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import json
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import (
    ACK,
    COLUMNS,
    ENDPOINT_COLUMNS,
    FLAG_NAMES,
    OPT_MSS,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    OPT_WS,
    URG,
    CaptureStats,
    PacketTable,
    endpoint_text,
    format_addr,
    is_too_big,
)
from tcpwhy.filter import DisplayFilter
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.tcp.seq import ack_shown, seq_offset
from tcpwhy.tcp.streams import StreamTracker
from tcpwhy.timestamps import rfc3339

CSV_HEADER = ("No.", "Time", "Source", "Destination", "Length", "Info")
"""The CSV format's header row: tshark's default columns."""
_addr = functools.lru_cache(maxsize=1 << 14)(format_addr)


@functools.lru_cache(maxsize=512)
def flag_names(flags: int) -> tuple[str, ...]:
    """Flag names in Wireshark's order (cached: a capture uses a handful of combinations)."""
    return tuple(name for bit, name in FLAG_NAMES if flags & bit)


_INFO_COLUMNS = (
    "flags", "sport", "dport", "urp", "payload_len", "opt_order", "opt_mss", "opt_ws",
    "opt_tsval", "opt_tsecr", "sack_n",
)  # fmt: skip


def info_text(c: dict[str, list[Any]], i: int, seq: int, ack: int, win: int, sack_base: int) -> str:
    """Wireshark's TCP Info column for row i of a chunk's columns as Python lists
    (`chunk_lists`), with relative or absolute numbers already chosen."""
    f = c["flags"][i]
    names = flag_names(f)
    parts = [f"{c['sport'][i]} → {c['dport'][i]} [{', '.join(names) if names else '<None>'}]"]
    parts.append(f"Seq={seq}")
    if f & ACK:
        parts.append(f"Ack={ack}")
    parts.append(f"Win={win}")
    if f & URG:
        parts.append(f"Urg={c['urp'][i]}")
    parts.append(f"Len={c['payload_len'][i]}")
    order = c["opt_order"][i]
    while order:
        code = order & 7
        order >>= 3
        if code == OPT_MSS:
            parts.append(f"MSS={c['opt_mss'][i]}")
        elif code == OPT_WS:
            parts.append(f"WS={1 << min(c['opt_ws'][i], 14)}")
        elif code == OPT_SACK_PERM:
            parts.append("SACK_PERM")
        elif code == OPT_TS:
            parts.append(f"TSval={c['opt_tsval'][i]} TSecr={c['opt_tsecr'][i]}")
        elif code == OPT_SACK:
            for le, re in zip(c["sack_le"][i][: c["sack_n"][i]], c["sack_re"][i], strict=False):
                parts.append(f"SLE={seq_offset(le, sack_base)} SRE={seq_offset(re, sack_base)}")
    return " ".join(parts)


def chunk_lists(t: PacketTable, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Columns as Python lists, converted once per chunk: per-row access to numpy scalars is
    what made the view slow."""
    out = {name: t[name].tolist() for name in names}
    if any(t["sack_n"]):
        out["sack_le"] = t["sack_le"].tolist()
        out["sack_re"] = t["sack_re"].tolist()
    return out


# tshark's ICMP and ICMPv6 Info texts (Wireshark 4.0 packet-icmp.c, packet-icmpv6.c)
ICMP_TYPES = {3: "Destination unreachable", 11: "Time-to-live exceeded", 12: "Parameter problem"}
ICMP_CODES = {
    3: (
        "Network unreachable",
        "Host unreachable",
        "Protocol unreachable",
        "Port unreachable",
        "Fragmentation needed",
        "Source route failed",
        "Destination network unknown",
        "Destination host unknown",
        "Source host isolated",
        "Network administratively prohibited",
        "Host administratively prohibited",
        "Network unreachable for TOS",
        "Host unreachable for TOS",
        "Communication administratively filtered",
        "Host precedence violation",
        "Precedence cutoff in effect",
    ),
    11: ("Time to live exceeded in transit", "Fragment reassembly time exceeded"),
    12: ("Pointer indicates the error", "Required option missing", "Bad length"),
}
ICMP6_TYPES = {
    1: "Destination Unreachable",
    2: "Packet Too Big",
    3: "Time Exceeded",
    4: "Parameter Problem",
}
ICMP6_CODES = {
    1: (
        "no route to destination",
        "Administratively prohibited",
        "Beyond scope of source address",
        "Address unreachable",
        "Port unreachable",
        "Source address failed ingress/egress policy",
        "Reject route to destination",
        "Error in Source Routing Header",
    ),
    3: ("hop limit exceeded in transit", "fragment reassembly time exceeded"),
    4: (
        "erroneous header field encountered",
        "unrecognized Next Header type encountered",
        "unrecognized IPv6 option encountered",
        "IPv6 First Fragment has incomplete IPv6 Header Chain",
    ),
}


def icmp_code_text(version: int, icmp_type: int, code: int) -> str:
    """The code's name as tshark prints it ("" where it prints none)."""
    if version == 6:
        if icmp_type == 2:
            return ""
        names6 = ICMP6_CODES.get(icmp_type, ())
        return names6[code] if code < len(names6) else "Unknown"
    names = ICMP_CODES.get(icmp_type, ())
    return names[code] if code < len(names) else "Unknown code"


def icmp_info(version: int, icmp_type: int, code: int) -> str:
    """tshark's Info column of an ICMP or ICMPv6 error."""
    text = icmp_code_text(version, icmp_type, code)
    if version == 6:
        name = ICMP6_TYPES.get(icmp_type, "Unknown")
        return f"{name} ({text})" if text else name
    return f"{ICMP_TYPES.get(icmp_type, 'Unknown ICMP (obsolete or malformed?)'):<20} ({text})"


@dataclass
class PacketRow:
    frame: int
    time: float
    src: str
    dst: str
    sport: int
    dport: int
    length: int
    flags: tuple[str, ...]
    seq: int
    ack: int
    len: int
    win: int
    stream: int
    analysis: list[str]
    info: str
    icmp: dict[str, Any] | None = None  # an ICMP error about TCP: what it says and quotes
    ts_ns: int = 0  # capture timestamp, nanoseconds since the epoch
    time_text: str = ""  # the Time column in a tshark time format (`-t`), else ""

    def as_json(self) -> dict[str, Any]:
        d = {
            "frame": self.frame,
            "time": round(self.time, 9),
            "src": self.src,
            "dst": self.dst,
            "sport": self.sport,
            "dport": self.dport,
            "length": self.length,
            "flags": list(self.flags),
            "seq": self.seq,
            "ack": self.ack,
            "len": self.len,
            "win": self.win,
            "stream": self.stream,
            "analysis": self.analysis,
            "info": self.info,
        }
        if self.icmp is not None:
            d["icmp"] = self.icmp
        return d


def iter_rows(
    source: str,
    stats: CaptureStats,
    absolute: bool = False,
    limit: int | None = None,
    flt: DisplayFilter | None = None,
    time_format: str | None = None,
    meta: dict[str, int] | None = None,
) -> Iterator[PacketRow]:
    """The rows of the packet list; with a display filter, only the packets it matches.
    With a tshark time format, each row's `time_text` is its Time column in it."""
    from tcpwhy.views import packet_chunks

    shown = 0
    digits = -1
    last_captured: int | None = None  # for -t d: the previous frame of the capture
    last_shown: int | None = None  # for -t dd: the previous row listed
    for ch in packet_chunks([source], [stats], flt):
        t, s, a, keep, tracker = ch.table, ch.streams, ch.analysis, ch.keep, ch.tracker
        assert a is not None
        if digits < 0:
            digits = capture_ts_digits(source, t["ts_ns"])
            if meta is not None:
                meta["digits"] = digits
        t0 = stats.first_ts_ns or 0
        rel_t = ((t["ts_ns"] - t0).astype(np.float64) / 1e9).tolist()
        ts = t["ts_ns"].tolist()
        seqs = (t["seq"] if absolute else s["rel_seq"]).tolist()
        acks = (t["ack"] if absolute else s["rel_ack"]).tolist()
        # tshark's tcp.ack for every row at once (the raw field without the ACK flag)
        acks_shown = (
            t["ack"] if absolute else ack_shown(t["ack"], s["rel_ack"], t["flags"] & ACK)
        ).tolist()
        # SACK edges are in the other direction's sequence space: base = raw ack - rel ack
        sack_base = (
            [0] * len(t) if absolute else (t["ack"].astype(np.int64) - s["rel_ack"]).tolist()
        )
        c = chunk_lists(
            t, (*_INFO_COLUMNS, "frame", "frame_len", "src_hi", "src_lo", "dst_hi", "dst_lo")
        )
        win = s["win_scaled"].tolist()
        stream = s["stream"].tolist()
        flagged = a.bits.tolist()
        icmp_rows = _icmp_rows(t, tracker, ch.icmp_keep, t0) if t.icmp is not None else []
        # every ICMP row's (frame, time), shown or not: the frames before a row (-t d)
        icmp_all = (
            list(zip(t.icmp["frame"].tolist(), t.icmp["ts_ns"].tolist(), strict=True))
            if t.icmp is not None
            else []
        )
        k = 0
        m = 0
        for i in range(len(t) + 1):
            while k < len(icmp_rows) and icmp_rows[k][0] <= i:
                if limit is not None and shown >= limit:
                    return
                r = icmp_rows[k][1]
                while m < len(icmp_all) and icmp_all[m][0] < r.frame:
                    last_captured = icmp_all[m][1]
                    m += 1
                if time_format is not None:
                    r.time_text = tshark_time(
                        time_format, r.ts_ns, digits, t0, last_captured, last_shown
                    )
                last_shown = r.ts_ns
                yield r
                shown += 1
                k += 1
            if i == len(t):
                break
            if limit is not None and shown >= limit:
                return
            while m < len(icmp_all) and icmp_all[m][0] < c["frame"][i]:
                last_captured = icmp_all[m][1]
                m += 1
            prev_captured = last_captured
            last_captured = ts[i]
            if keep is not None and not keep[i]:
                continue
            f = c["flags"][i]
            # the Info column prints Ack only with the flag
            info = info_text(c, i, seqs[i], acks[i] if f & ACK else 0, win[i], sack_base[i])
            text = ""
            if time_format is not None:
                text = tshark_time(time_format, ts[i], digits, t0, prev_captured, last_shown)
            last_shown = ts[i]
            yield PacketRow(
                frame=c["frame"][i],
                time=rel_t[i],
                src=_addr(c["src_hi"][i], c["src_lo"][i]),
                dst=_addr(c["dst_hi"][i], c["dst_lo"][i]),
                sport=c["sport"][i],
                dport=c["dport"][i],
                length=c["frame_len"][i],
                flags=flag_names(f),
                seq=seqs[i],
                ack=acks_shown[i],
                len=c["payload_len"][i],
                win=win[i],
                stream=stream[i],
                analysis=a.names(i) if flagged[i] else [],
                info=a.info_prefix(i) + info if flagged[i] else info,
                ts_ns=ts[i],
                time_text=text,
            )
            shown += 1


# ---- time formats -------------------------------------------------------------------------

TIME_FORMATS = ("r", "a", "ad", "d", "dd", "e", "u", "ud")
"""tshark's -t formats: relative to the first packet, absolute local time (with date), delta
from the previous captured (displayed) frame, epoch seconds, UTC time (with date)."""


def tshark_time(
    fmt: str,
    ts_ns: int,
    digits: int,
    first_ns: int,
    prev_captured: int | None,
    prev_shown: int | None,
) -> str:
    """The Time column tshark prints in format `fmt` (its -t), one row at a time: the
    reference the column-wise formatting is held to."""
    if fmt in ("r", "d", "dd", "e"):
        if fmt == "r":
            v = ts_ns - first_ns
        elif fmt == "e":
            v = ts_ns
        else:
            prev = prev_captured if fmt == "d" else prev_shown
            v = 0 if prev is None else ts_ns - prev
        sign = "-" if v < 0 else ""
        v = abs(v)
        return sign + str(v // 10**9) + _frac(v % 10**9, digits)
    sec, ns = divmod(ts_ns, 10**9)
    tm = time.gmtime(sec) if fmt in ("u", "ud") else time.localtime(sec)
    clock = time.strftime("%H:%M:%S", tm) + _frac(ns, digits)
    if fmt in ("ad", "ud"):
        return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d} {clock}"
    return clock


def _frac(ns: int, digits: int) -> str:
    """'.' and the first `digits` of nine decimals, truncated as tshark does."""
    return "." + f"{ns:09d}"[:digits] if digits > 0 else ""


def _digits_of_tsresol(res: int) -> int:
    """Decimals tshark shows for a pcapng if_tsresol (10^-n s, or 2^-n with the high bit)."""
    if res & 0x80:
        return 9 if (res & 0x7F) > 19 else 6
    n = res & 0x7F
    return n if n <= 3 else (6 if n <= 6 else 9)


def capture_ts_digits(source: str, first_ts: npt.NDArray[np.int64] | None = None) -> int:
    """The decimals of the capture's time stamps as tshark prints them (its "automatic"
    precision): 9 for nanosecond pcap, 6 for microsecond pcap, the first interface's
    if_tsresol for pcapng. Standard input cannot be looked at twice: there, 9 if the first
    packets have sub-microsecond times, else 6."""
    if source != "-":
        try:
            with open(source, "rb") as raw:
                head = raw.read(2)
                raw.seek(0)
                f: Any = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
                data = f.read(1 << 16)
        except (OSError, EOFError, gzip.BadGzipFile):
            data = b""
        magic = data[:4]
        if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
            return 9
        if magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"):
            return 6
        if magic == b"\x0a\x0d\x0d\x0a" and len(data) >= 12:
            e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            pos = 0
            while pos + 12 <= len(data):
                btype, blen = struct.unpack(e + "II", data[pos : pos + 8])
                if blen < 12:
                    break
                if btype == 1:  # the first interface description block
                    opts = data[pos + 16 : pos + blen - 4]
                    i = 0
                    while i + 4 <= len(opts):
                        code, ln = struct.unpack(e + "HH", opts[i : i + 4])
                        if code == 0:
                            break
                        if code == 9 and ln >= 1:
                            return _digits_of_tsresol(opts[i + 4])
                        i += 4 + ln + (-ln % 4)
                    return 6
                pos += blen
    if first_ts is not None and len(first_ts) and bool(np.any(first_ts % 1000)):
        return 9
    return 6 if first_ts is not None else 9


def _icmp_rows(
    t: PacketTable,
    tracker: StreamTracker,
    keep: npt.NDArray[np.bool_] | None,
    t0: int,
) -> list[tuple[int, PacketRow]]:
    """A chunk's ICMP errors as packet-list rows, each with the index of the TCP row it
    comes before; only those the display filter matched (`keep`, None: all)."""
    ic = t.icmp
    assert ic is not None and tracker.icmp_out is not None
    stream = tracker.icmp_out["stream"]
    c = chunk_lists(
        ic,
        (
            "frame", "ts_ns", "frame_len", "icmp_at", "ip_version", "icmp_type", "icmp_code",
            "icmp_mtu", "icmp_src_hi", "icmp_src_lo", "icmp_dst_hi", "icmp_dst_lo", "src_hi",
            "src_lo", "dst_hi", "dst_lo", "sport", "dport", "flags", "seq", "ack", "win",
            "payload_len", "doff",
        ),
    )  # fmt: skip
    out = []
    for i in range(len(ic)):
        if keep is not None and not keep[i]:
            continue
        v, ty, code = c["ip_version"][i], c["icmp_type"][i], c["icmp_code"][i]
        whole = c["doff"][i] > 0
        src = _addr(c["src_hi"][i], c["src_lo"][i])
        dst = _addr(c["dst_hi"][i], c["dst_lo"][i])
        about: dict[str, Any] = {
            "type": ty,
            "code": code,
            "text": icmp_code_text(v, ty, code) or icmp_info(v, ty, code),
            "quoted": f"{endpoint_text(src, c['sport'][i])} → {endpoint_text(dst, c['dport'][i])}",
            "quoted_seq": c["seq"][i],
        }
        if c["icmp_mtu"][i] or is_too_big(v, ty, code):
            about["mtu"] = c["icmp_mtu"][i]
        if whole:
            about["quoted_flags"] = list(flag_names(c["flags"][i]))
        row = PacketRow(
            frame=c["frame"][i],
            time=(c["ts_ns"][i] - t0) / 1e9,
            src=_addr(c["icmp_src_hi"][i], c["icmp_src_lo"][i]),
            dst=_addr(c["icmp_dst_hi"][i], c["icmp_dst_lo"][i]),
            sport=c["sport"][i],
            dport=c["dport"][i],
            length=c["frame_len"][i],
            flags=flag_names(c["flags"][i]) if whole else (),
            seq=c["seq"][i],
            ack=c["ack"][i] if whole and c["flags"][i] & ACK else 0,
            len=c["payload_len"][i],
            win=c["win"][i],
            stream=int(stream[i]),
            analysis=[],
            info=icmp_info(v, ty, code),
            icmp=about,
            ts_ns=c["ts_ns"][i],
        )
        out.append((c["icmp_at"][i], row))
    return out


def write_packets_rows(
    source: str,
    fmt: str = "table",
    absolute: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
    time_format: str | None = None,
) -> CaptureStats:
    """The packet list row by row in Python: the reference the compiled writer
    (`write_packets`) is held to, byte for byte, and its fallback."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    live = source == "-"
    meta: dict[str, int] = {}
    tf = time_format if fmt != "jsonl" else None
    rows = iter_rows(source, stats, absolute, limit, flt, tf, meta)
    first = next(rows, None)  # read before the header, as `write_packets` does
    if fmt == "csv":
        out.write(",".join(CSV_HEADER) + "\n")
    for r in itertools.chain([first] if first is not None else [], rows):
        out.write(_row_text(r, fmt, meta["digits"]))
        if live:
            out.flush()
    return stats


def write_packets(
    source: str,
    fmt: str = "table",
    absolute: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
    time_format: str | None = None,
) -> CaptureStats:
    """Print the packet list, formatted column-wise by the compiled writer
    (`tcpwhy.report.packets_kernel`) in large buffers; a pipe on stdin is printed as packets
    arrive (a buffer at a time). `time_format`: one of tshark's -t formats (`TIME_FORMATS`)
    for the Time column of the table and CSV (JSON lines have both `time` and `ts`).
    From a file, each chunk is formatted and written by a thread of its own while the next
    one is read, decoded and analysed (`_ChunkWriter`)."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    live = source == "-"
    sink = _Sink(out, live=live)
    from tcpwhy.views import packet_chunks

    chunks = packet_chunks([source], [stats], flt)  # as `Capture.packets` has them
    # the first chunk before the header: a file that cannot be read is one error line, with
    # no header row left on the output above it
    first = next(chunks, None)
    if fmt == "csv":
        sink.write(b",".join(c.encode() for c in CSV_HEADER) + b"\n")
    clock = _Clock(time_format if fmt != "jsonl" else None)
    writer = _ChunkWriter(sink, fmt, clock, threaded=not live)
    shown = 0
    try:
        for ch in itertools.chain([first] if first is not None else [], chunks):
            if limit is not None and shown >= limit:
                break
            t, s, a, keep, tracker = ch.table, ch.streams, ch.analysis, ch.keep, ch.tracker
            if clock.digits < 0:
                clock.digits = capture_ts_digits(source, t["ts_ns"])
            sel = np.flatnonzero(keep) if keep is not None else _arange(len(t))
            icmp_rows = (
                _icmp_rows(t, tracker, ch.icmp_keep, stats.first_ts_ns or 0)
                if t.icmp is not None
                else []
            )
            at = np.searchsorted(sel, [r[0] for r in icmp_rows], "left") if icmp_rows else None
            if limit is not None and len(sel) + len(icmp_rows) > limit - shown:
                sel, icmp_rows, at = _clip(sel, icmp_rows, at, limit - shown)
            shown += len(sel) + len(icmp_rows)
            tval = clock.chunk(t, sel, icmp_rows, stats.first_ts_ns or 0)
            writer.chunk(t, s, a, absolute, stats, sel.astype(np.int64), icmp_rows, at, tval)
    finally:
        writer.close()
    sink.flush()
    return stats


@functools.lru_cache(maxsize=4)
def _arange_cached(n: int) -> npt.NDArray[np.int64]:
    return np.arange(n, dtype=np.int64)


def _arange(n: int) -> npt.NDArray[np.int64]:
    """0..n-1, shared between chunks of the same size (never written to)."""
    return _arange_cached(n)


def _clip(
    sel: npt.NDArray[Any],
    icmp_rows: list[tuple[int, PacketRow]],
    at: npt.NDArray[Any] | None,
    room: int,
) -> tuple[npt.NDArray[Any], list[tuple[int, PacketRow]], npt.NDArray[Any] | None]:
    """The first `room` rows of a chunk, TCP and ICMP rows together in list order."""
    if not icmp_rows:
        return sel[:room], icmp_rows, at
    assert at is not None
    # ICMP row k is listed before TCP row at[k]: it is row at[k] + k of the chunk
    pos = at + np.arange(len(icmp_rows))
    n_icmp = int(np.count_nonzero(pos < room))
    return sel[: room - n_icmp], icmp_rows[:n_icmp], at[:n_icmp]


class _Clock:
    """tshark's Time column (`-t`) computed column-wise: what the kernel prints for each row
    (`tval`) and the ICMP rows' texts, with the previous frames carried across chunks."""

    def __init__(self, fmt: str | None) -> None:
        from tcpwhy.report.packets_kernel import TIME_CLOCK, TIME_DATE, TIME_DEFAULT, TIME_SECONDS

        self.fmt = fmt
        self.mode = (
            TIME_DEFAULT
            if fmt is None
            else TIME_SECONDS
            if fmt in ("r", "d", "dd", "e")
            else TIME_DATE
            if fmt in ("ad", "ud")
            else TIME_CLOCK
        )
        self.digits = -1
        self.last_captured: int | None = None
        self.last_shown: int | None = None

    def chunk(
        self,
        t: PacketTable,
        sel: npt.NDArray[Any],
        icmp_rows: list[tuple[int, PacketRow]],
        first_ns: int,
    ) -> npt.NDArray[np.int64]:
        """The nanoseconds each TCP row's Time prints; sets the ICMP rows' `time_text`."""
        fmt = self.fmt
        ts = t["ts_ns"]
        if fmt is None:
            return ts  # not printed
        icmp_ts = np.array([r.ts_ns for _, r in icmp_rows], np.int64)
        if fmt == "r":
            tval, ival = ts - first_ns, icmp_ts - first_ns
        elif fmt in ("e", "u", "ud"):
            tval, ival = ts, icmp_ts
        elif fmt in ("a", "ad"):
            tval, ival = ts + _local_offsets_ns(ts), icmp_ts + _local_offsets_ns(icmp_ts)
        else:
            if fmt == "d":  # every TCP and ICMP frame of the chunk, shown or not
                ic = t.icmp
                fr = t["frame"] if ic is None else np.concatenate((t["frame"], ic["frame"]))
                at = ts if ic is None else np.concatenate((ts, ic["ts_ns"]))
                n_tcp = len(t)
                tcp_pos: npt.NDArray[Any] = np.arange(n_tcp)
            else:  # the rows listed
                fr = np.concatenate((t["frame"][sel], [r.frame for _, r in icmp_rows]))
                at = np.concatenate((ts[sel], icmp_ts))
                n_tcp = len(sel)
                tcp_pos = sel
            fr = fr.astype(np.int64)
            order = np.argsort(fr, kind="stable")
            srt = at[order].astype(np.int64)
            prev = np.empty_like(srt)
            if len(srt):
                last = self.last_captured if fmt == "d" else self.last_shown
                prev[0] = srt[0] if last is None else last
                prev[1:] = srt[:-1]
                if fmt == "d":
                    self.last_captured = int(srt[-1])
                else:
                    self.last_shown = int(srt[-1])
            delta = np.empty_like(srt)
            delta[order] = srt - prev
            tval = np.zeros(len(t), np.int64)
            tval[tcp_pos] = delta[:n_tcp]
            if fmt == "d":
                ic = t.icmp
                icmp_frames = (
                    {}
                    if ic is None
                    else dict(zip(ic["frame"].tolist(), delta[n_tcp:].tolist(), strict=True))
                )
                ival = np.array([icmp_frames[r.frame] for _, r in icmp_rows], np.int64)
            else:
                ival = delta[n_tcp:]
        for (_, r), v in zip(icmp_rows, ival.tolist(), strict=True):
            r.time_text = _format_tval(self.mode, v, self.digits)
        return np.ascontiguousarray(tval, dtype=np.int64)


def _format_tval(mode: int, v: int, digits: int) -> str:
    """The text the kernel prints for `tval` v (for the few ICMP rows)."""
    from tcpwhy.report.packets_kernel import TIME_DATE, TIME_SECONDS

    if mode == TIME_SECONDS:
        sign = "-" if v < 0 else ""
        v = abs(v)
        return sign + str(v // 10**9) + _frac(v % 10**9, digits)
    sec, ns = divmod(v, 10**9)
    tm = time.gmtime(sec)
    clock = time.strftime("%H:%M:%S", tm) + _frac(ns, digits)
    if mode == TIME_DATE:
        return f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d} {clock}"
    return clock


def _local_offsets_ns(ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The local time zone's UTC offset at each time, in nanoseconds: looked up once per
    distinct minute (and per second in a minute where the offset changes)."""
    if not len(ts):
        return np.zeros(0, np.int64)
    sec = ts // 1_000_000_000
    minute = sec // 60
    uniq, inv = np.unique(minute, return_inverse=True)
    offs = np.empty(len(uniq), np.int64)
    mixed = []
    for k, m in enumerate(uniq.tolist()):
        lo = time.localtime(m * 60).tm_gmtoff
        offs[k] = lo
        if time.localtime(m * 60 + 59).tm_gmtoff != lo:
            mixed.append(k)
    out = offs[inv]
    for k in mixed:
        rows = np.flatnonzero(inv == k)
        out[rows] = [time.localtime(s).tm_gmtoff for s in sec[rows].tolist()]
    return out * 1_000_000_000


class _Sink:
    """Bytes to the view's text stream: straight to its binary buffer when it has one."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out = out
        self.live = live
        self.raw = getattr(out, "buffer", None)
        if self.raw is not None:
            out.flush()

    def write(self, data: bytes | memoryview) -> None:
        if self.raw is not None:
            self.raw.write(data)
            if self.live:
                self.raw.flush()
        else:
            self.out.write(bytes(data).decode())
            if self.live:
                self.out.flush()

    def flush(self) -> None:
        (self.raw if self.raw is not None else self.out).flush()


_BUF_BYTES = 1 << 22


@functools.lru_cache(maxsize=2)
def _buffers(size: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The output buffer and row ends, reused by every chunk (a fresh 4 MB buffer is page
    faults each time)."""
    return np.empty(size, np.uint8), np.empty(size // 16 + 1, np.int64)


@functools.lru_cache(maxsize=1)
def _vocab() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The kernel's static words (see `tcpwhy.report.packets_kernel`) and prefix order."""
    from tcpwhy.report.packets_kernel import W_INFO_FLAGS, W_JSON_FLAGS, W_JSON_HEAD
    from tcpwhy.tcp.analysis import FLAGS, INFO_PREFIX

    words = [name.encode() for _, name in FLAG_NAMES]
    texts = {bit: text for bit, text in INFO_PREFIX}
    words += [f"[{texts.get(1 << k, '')}] ".encode() for k in range(len(FLAGS))]
    words += [json.dumps(name).encode() for name in FLAGS]
    assert len(words) == W_JSON_HEAD
    words.append(b'{"schema_version": "%s", "frame": ' % SCHEMA_VERSION.encode())
    # each combination of the nine flags: its JSON list and its Info text, keys around
    combos = [flag_names(f) for f in range(512)]
    assert len(words) == W_JSON_FLAGS
    words += [f', "flags": {json.dumps(list(n))}, "seq": '.encode() for n in combos]
    assert len(words) == W_INFO_FLAGS
    words += [f" [{', '.join(n) if n else '<None>'}] Seq=".encode() for n in combos]
    vocab = np.frombuffer(b"".join(words), np.uint8).copy()
    voff = np.cumsum([0] + [len(w) for w in words], dtype=np.int64)
    order = np.array([bit.bit_length() - 1 for bit, _ in INFO_PREFIX], np.int64)
    return vocab, voff, order


def _col(a: npt.NDArray[Any], dtype: Any, own: bool = False) -> npt.NDArray[Any]:
    """`a` as the kernel takes it: of `dtype`, C-contiguous and writable (no copy if it is);
    `own`: always a copy (the table's arrays are refilled by the next chunk)."""
    if own:
        return np.array(a, dtype=dtype, order="C", copy=True)
    b = np.ascontiguousarray(a, dtype=dtype)  # a itself when it already is
    return b if b.flags.writeable else b.copy()


@functools.lru_cache(maxsize=2)
def _zeros_cached(n: int) -> npt.NDArray[np.int64]:
    return np.zeros(n, np.int64)


_TIME_PYTHON_S = float(1 << 32)
"""Relative times from this (in seconds, either sign) may need the Python writer (the
compiled one stops at 2**33 s): such chunks are formatted in the reading thread."""


class _ChunkWriter:
    """Formats and writes chunks in order: from a file in one thread of its own (the
    compiled writer releases the GIL), so that formatting a chunk takes a second core while
    the next chunk is read, decoded and analysed; from a pipe in the caller's thread, each
    buffer written as soon as it is made. The kernel's buffers are the writing thread's
    alone; a queued chunk's columns are copies (the reader refills the table's arrays)."""

    def __init__(self, sink: _Sink, fmt: str, clock: _Clock, threaded: bool) -> None:
        from tcpwhy.report.packets_kernel import FMT_CSV, FMT_JSONL, FMT_TABLE

        self.sink = sink
        self.fmt = fmt
        self.code = {"table": FMT_TABLE, "csv": FMT_CSV, "jsonl": FMT_JSONL}[fmt]
        self.clock = clock
        self.pool: Any = None
        if threaded:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="tcpwhy-packets-writer")
        self.pending: Any = None

    def chunk(
        self,
        t: PacketTable,
        s: dict[str, npt.NDArray[Any]],
        a: Any,
        absolute: bool,
        stats: CaptureStats,
        sel: npt.NDArray[np.int64],
        icmp_rows: list[tuple[int, PacketRow]],
        at: npt.NDArray[Any] | None,
        tval: npt.NDArray[np.int64],
    ) -> None:
        """The selected rows of one table, with its ICMP rows in their places: queued (after
        the chunk before it has been written), or written now."""
        if not len(sel) and not icmp_rows:
            return
        own = self.pool is not None
        printed = tval if self.clock.fmt is not None else None
        cols, far = _kernel_columns(t, s, a, absolute, stats, printed, own)
        self.wait()
        if own and not far:
            self.pending = self.pool.submit(self._emit, cols, sel, icmp_rows, at, None)
        else:
            self._emit(cols, sel, icmp_rows, at, (t, s, a, absolute, stats, tval))

    def wait(self) -> None:
        """Until the chunk queued is written (raising what its writing raised)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        """Writes what is queued and stops the thread (after the caller's error too: the rows
        before it are written, as without the thread)."""
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown()

    def _emit(
        self,
        cols: tuple[Any, ...],
        sel: npt.NDArray[np.int64],
        icmp_rows: list[tuple[int, PacketRow]],
        at: npt.NDArray[Any] | None,
        table: tuple[Any, ...] | None,
    ) -> None:
        """Runs the compiled writer over the rows, buffer by buffer; `table` (the chunk's
        own columns, for rows the compiled writer does not print) is None for a queued
        chunk, which has none (`_TIME_PYTHON_S`)."""
        from tcpwhy.report.packets_kernel import format_packets

        sink, clock, code = self.sink, self.clock, self.code
        buf, ends = _buffers(_BUF_BYTES if len(sel) > 64 else 64 * 4096)
        view = memoryview(buf)  # type: ignore[arg-type]
        k = 0  # next ICMP row
        j = 0
        while j < len(sel) or k < len(icmp_rows):
            # up to the next ICMP row's place
            stop = int(at[k]) if at is not None and k < len(icmp_rows) else len(sel)
            rows = sel[:stop]
            while j < stop:
                n = format_packets(code, clock.mode, clock.digits, rows, j, *cols, buf, ends)
                done = n if n >= 0 else -n - 1
                if done:
                    sink.write(view[: ends[done - 1]])
                    j += done
                if n < 0:  # a time beyond the compiled writer's range: this row in Python
                    if table is None:
                        raise RuntimeError("tcpwhy packets: a far time in a queued chunk")
                    t, s, a, absolute, stats, tval = table
                    _write_python_rows(
                        sink, self.fmt, t, s, a, absolute, stats, sel[j : j + 1], clock, tval
                    )
                    j += 1
            if k < len(icmp_rows):
                sink.write(_row_text(icmp_rows[k][1], self.fmt, clock.digits).encode())
                k += 1


def _kernel_columns(
    t: PacketTable,
    s: dict[str, npt.NDArray[Any]],
    a: Any,
    absolute: bool,
    stats: CaptureStats,
    tval: npt.NDArray[np.int64] | None,
    own: bool,
) -> tuple[tuple[Any, ...], bool]:
    """The compiled writer's column arguments after the rows (copies with `own`), and
    whether a relative time reaches `_TIME_PYTHON_S` (a row the Python writer may print).
    `tval`: None where no tshark time format is printed."""
    t0 = stats.first_ts_ns or 0
    ts_ns = t["ts_ns"]
    rel_ns = np.subtract(ts_ns, t0, dtype=np.int64)
    rel_s = np.divide(rel_ns, 1e9)  # the double `time` is (rel_ns as a double, over 1e9)
    far = bool(len(rel_s)) and max(-float(rel_s.min()), float(rel_s.max())) >= _TIME_PYTHON_S
    flags = t["flags"]
    seq = t["seq"] if absolute else s["rel_seq"]
    # without the ACK flag the JSON carries the raw field, as tshark's tcp.ack (the Info
    # column prints Ack only with the flag, so one array serves both)
    ack = t["ack"] if absolute else ack_shown(t["ack"], s["rel_ack"], flags & ACK)
    # SACK edges are in the other direction's sequence space: base = raw ack - rel ack
    if absolute or not t["sack_n"].any():
        sack_base = _zeros_cached(len(t))  # never written
    else:
        sack_base = np.subtract(t["ack"], s["rel_ack"], dtype=np.int64)
    ts = _col(ts_ns, np.int64, own)
    vocab, voff, order = _vocab()
    u8, u4, u2 = np.uint64, np.uint32, np.uint16
    cols = (
        _col(t["frame"], u8, own), rel_ns, rel_s.view(np.int64),
        ts if tval is None else _col(tval, np.int64, own), ts,
        tuple(_col(t[k], COLUMNS[k][0], own) for k in ENDPOINT_COLUMNS),
        _col(t["frame_len"], u4, own), _col(flags, u2, own),
        _col(seq, u4, own), _col(ack, u4, own and absolute), _col(s["win_scaled"], np.int64, own),
        _col(t["urp"], u2, own), _col(t["payload_len"], u4, own), _col(t["opt_order"], u4, own),
        _col(t["opt_mss"], np.int32, own), _col(t["opt_ws"], np.int8, own),
        _col(t["opt_tsval"], u4, own), _col(t["opt_tsecr"], u4, own),
        _col(t["sack_n"], np.uint8, own), _col(t["sack_le"], u4, own),
        _col(t["sack_re"], u4, own), sack_base, _col(s["stream"], np.int64, own),
        _col(a.bits, u4, own), _col(a.dup_ack_frame, np.int64, own),
        _col(a.dup_ack_num, np.int64, own), order, vocab, voff,
    )  # fmt: skip
    return cols, far


def _row_text(r: PacketRow, fmt: str, digits: int) -> str:
    """One row as `write_packets_rows` writes it (`digits`: the decimals of JSON's `ts`)."""
    if fmt == "jsonl":
        head = json.dumps(
            {"schema_version": SCHEMA_VERSION, "frame": r.frame, "time": round(r.time, 9)}
        )[:-1]
        text = json.dumps({"schema_version": SCHEMA_VERSION, **r.as_json()}, ensure_ascii=False)
        assert text.startswith(head)
        ts = ("-" if r.ts_ns < 0 else "") + str(abs(r.ts_ns) // 10**9)
        ts += _frac(abs(r.ts_ns) % 10**9, digits)
        utc = rfc3339(r.ts_ns)
        return f'{head}, "ts": {ts}, "ts_ns": {r.ts_ns}, "utc_time": "{utc}"{text[len(head) :]}\n'
    tm = r.time_text or f"{r.time:.6f}"
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow((r.frame, tm, r.src, r.dst, r.length, r.info))
        return buf.getvalue()
    return f"{r.frame:>7} {tm:>12} {r.src:>15} → {r.dst:<15} {r.length:>5} {r.info}\n"


def _row_lists(t: PacketTable, i: int) -> dict[str, list[Any]]:
    """Row i's columns as `chunk_lists` gives them, for a single row."""
    names = (*_INFO_COLUMNS, "frame", "frame_len", "src_hi", "src_lo", "dst_hi", "dst_lo")
    out = {name: [t[name][i].item()] for name in names}
    out["sack_le"] = [t["sack_le"][i].tolist()]
    out["sack_re"] = [t["sack_re"][i].tolist()]
    return out


def _write_python_rows(
    sink: _Sink,
    fmt: str,
    t: PacketTable,
    s: dict[str, npt.NDArray[Any]],
    a: Any,
    absolute: bool,
    stats: CaptureStats,
    rows: npt.NDArray[np.int64],
    clock: _Clock,
    tval: npt.NDArray[np.int64],
) -> None:
    """Rows of one table formatted one by one (times the compiled writer does not print)."""
    t0 = stats.first_ts_ns or 0
    parts = []
    for i in rows.tolist():
        f = int(t["flags"][i])
        seq = int((t["seq"] if absolute else s["rel_seq"])[i])
        ack = int(t["ack"][i] if absolute else ack_shown(t["ack"][i], s["rel_ack"][i], f & ACK))
        base = 0 if absolute else int(t["ack"][i]) - int(s["rel_ack"][i])
        c = _row_lists(t, i)
        win = int(s["win_scaled"][i])
        ts = int(t["ts_ns"][i])
        r = PacketRow(
            frame=c["frame"][0],
            time=float(np.float64(ts - t0) / 1e9),
            src=_addr(c["src_hi"][0], c["src_lo"][0]),
            dst=_addr(c["dst_hi"][0], c["dst_lo"][0]),
            sport=c["sport"][0],
            dport=c["dport"][0],
            length=c["frame_len"][0],
            flags=flag_names(f),
            seq=seq,
            ack=ack,
            len=c["payload_len"][0],
            win=win,
            stream=int(s["stream"][i]),
            analysis=a.names(i),
            info=a.info_prefix(i) + info_text(c, 0, seq, ack, win, base),
            ts_ns=ts,
            time_text=""
            if clock.fmt is None
            else _format_tval(clock.mode, int(tval[i]), clock.digits),
        )
        parts.append(_row_text(r, fmt, clock.digits))
    sink.write("".join(parts).encode())
