"""`tcpwhy packets`: the packet list as Wireshark's list pane shows it.

ICMP and ICMPv6 errors about TCP (the tables' `icmp` rows) are listed in capture
order among the TCP packets, with the error's own addresses as Source and
Destination and tshark's ICMP Info text; a display filter sees their ICMP fields
and the quoted segment's fields (`tcpwhy.filter.icmp_fields`).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from tcpwhy.capture import iter_tables
from tcpwhy.decode.table import (
    ACK,
    FLAG_NAMES,
    OPT_MSS,
    OPT_SACK,
    OPT_SACK_PERM,
    OPT_TS,
    OPT_WS,
    URG,
    CaptureStats,
    PacketTable,
    format_addr,
)
from tcpwhy.filter import DisplayFilter, FilterContext
from tcpwhy.schemas import SCHEMA_VERSION
from tcpwhy.tcp.analysis import Analyzer
from tcpwhy.tcp.streams import StreamTracker

COLUMNS = ("No.", "Time", "Source", "Destination", "Length", "Info")
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
                parts.append(
                    f"SLE={(le - sack_base) & 0xFFFFFFFF} SRE={(re - sack_base) & 0xFFFFFFFF}"
                )
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
) -> Iterator[PacketRow]:
    """The rows of the packet list; with a display filter, only the packets it matches."""
    tracker = StreamTracker()
    analyzer = Analyzer()
    shown = 0
    for t in iter_tables(source, stats, reuse=True):
        s = tracker.feed(t)
        a = analyzer.feed(t, s)
        keep = None
        if flt is not None:
            ctx = FilterContext(t, streams=s, analysis=a, first_ts_ns=stats.first_ts_ns)
            keep = flt.mask(t, ctx)
        t0 = stats.first_ts_ns or 0
        rel_t = ((t["ts_ns"] - t0).astype(np.float64) / 1e9).tolist()
        seqs = (t["seq"] if absolute else s["rel_seq"]).tolist()
        acks = (t["ack"] if absolute else s["rel_ack"]).tolist()
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
        icmp_rows = _icmp_rows(t, tracker, flt, stats, t0) if t.icmp is not None else []
        k = 0
        for i in range(len(t) + 1):
            while k < len(icmp_rows) and icmp_rows[k][0] <= i:
                if limit is not None and shown >= limit:
                    return
                yield icmp_rows[k][1]
                shown += 1
                k += 1
            if i == len(t):
                break
            if limit is not None and shown >= limit:
                return
            if keep is not None and not keep[i]:
                continue
            f = c["flags"][i]
            ack = acks[i] if f & ACK else 0
            info = info_text(c, i, seqs[i], ack, win[i], sack_base[i])
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
                ack=ack,
                len=c["payload_len"][i],
                win=win[i],
                stream=stream[i],
                analysis=a.names(i) if flagged[i] else [],
                info=a.info_prefix(i) + info if flagged[i] else info,
            )
            shown += 1


def _icmp_rows(
    t: PacketTable,
    tracker: StreamTracker,
    flt: DisplayFilter | None,
    stats: CaptureStats,
    t0: int,
) -> list[tuple[int, PacketRow]]:
    """A chunk's ICMP errors as packet-list rows, each with the index of the TCP row it
    comes before; only those the display filter matches."""
    from tcpwhy.filter.icmp_fields import icmp_streams

    ic = t.icmp
    assert ic is not None and tracker.icmp_out is not None
    stream = tracker.icmp_out["stream"]
    keep = None
    if flt is not None:
        ctx = FilterContext(ic, streams=icmp_streams(ic, stream), first_ts_ns=stats.first_ts_ns)
        keep = flt.mask(ic, ctx)
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
            "quoted": f"{_bracket(src)}:{c['sport'][i]} → {_bracket(dst)}:{c['dport'][i]}",
            "quoted_seq": c["seq"][i],
        }
        if c["icmp_mtu"][i] or (v == 6 and ty == 2) or (v == 4 and ty == 3 and code == 4):
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
        )
        out.append((c["icmp_at"][i], row))
    return out


def _bracket(a: str) -> str:
    return f"[{a}]" if ":" in a else a


def write_packets_rows(
    source: str,
    fmt: str = "table",
    absolute: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
) -> CaptureStats:
    """The packet list row by row in Python: the reference the compiled writer
    (`write_packets`) is held to, byte for byte, and its fallback."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    live = source == "-"
    rows = iter_rows(source, stats, absolute, limit, flt)
    if fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(_versioned(r), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow((r.frame, f"{r.time:.6f}", r.src, r.dst, r.length, r.info))
    else:
        for r in rows:
            out.write(
                f"{r.frame:>7} {r.time:>12.6f} {r.src:>15} → {r.dst:<15} {r.length:>5} {r.info}\n"
            )
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
) -> CaptureStats:
    """Print the packet list, formatted column-wise by the compiled writer
    (`tcpwhy.report.packets_kernel`) in large buffers; a pipe on stdin is printed as packets
    arrive (a buffer at a time)."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    sink = _Sink(out, live=source == "-")
    if fmt == "csv":
        sink.write(b",".join(c.encode() for c in COLUMNS) + b"\n")
    tracker = StreamTracker()
    analyzer = Analyzer()
    shown = 0
    for t in iter_tables(source, stats, reuse=True):
        if limit is not None and shown >= limit:
            break
        s = tracker.feed(t)
        a = analyzer.feed(t, s)
        keep = None
        if flt is not None:
            ctx = FilterContext(t, streams=s, analysis=a, first_ts_ns=stats.first_ts_ns)
            keep = flt.mask(t, ctx)
        sel = np.flatnonzero(keep) if keep is not None else np.arange(len(t), dtype=np.int64)
        icmp_rows = (
            _icmp_rows(t, tracker, flt, stats, stats.first_ts_ns or 0) if t.icmp is not None else []
        )
        at = np.searchsorted(sel, [r[0] for r in icmp_rows], "left") if icmp_rows else None
        if limit is not None and len(sel) + len(icmp_rows) > limit - shown:
            sel, icmp_rows, at = _clip(sel, icmp_rows, at, limit - shown)
        shown += len(sel) + len(icmp_rows)
        _write_chunk(sink, fmt, t, s, a, absolute, stats, sel.astype(np.int64), icmp_rows, at)
    sink.flush()
    return stats


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


class _Sink:
    """Bytes to the view's text stream: straight to its binary buffer when it has one."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out = out
        self.live = live
        self.raw = getattr(out, "buffer", None)
        if self.raw is not None:
            out.flush()

    def write(self, data: bytes) -> None:
        if self.raw is not None:
            self.raw.write(data)
            if self.live:
                self.raw.flush()
        else:
            self.out.write(data.decode())
            if self.live:
                self.out.flush()

    def flush(self) -> None:
        (self.raw if self.raw is not None else self.out).flush()


_BUF_BYTES = 1 << 22


@functools.lru_cache(maxsize=1)
def _vocab() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The kernel's static words (see `tcpwhy.report.packets_kernel`) and prefix order."""
    from tcpwhy.tcp.analysis import FLAGS, INFO_PREFIX

    words = [name.encode() for _, name in FLAG_NAMES]
    texts = {bit: text for bit, text in INFO_PREFIX}
    words += [f"[{texts.get(1 << k, '')}] ".encode() for k in range(len(FLAGS))]
    words += [json.dumps(name).encode() for name in FLAGS]
    vocab = np.frombuffer(b"".join(words), np.uint8).copy()
    voff = np.cumsum([0] + [len(w) for w in words], dtype=np.int64)
    order = np.array([bit.bit_length() - 1 for bit, _ in INFO_PREFIX], np.int64)
    return vocab, voff, order


def _col(a: npt.NDArray[Any], dtype: Any) -> npt.NDArray[Any]:
    """`a` as the kernel takes it: of `dtype`, C-contiguous and writable (no copy if it is)."""
    if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
        return np.ascontiguousarray(a, dtype=dtype).copy()
    return a


def _write_chunk(
    sink: _Sink,
    fmt: str,
    t: PacketTable,
    s: dict[str, npt.NDArray[Any]],
    a: Any,
    absolute: bool,
    stats: CaptureStats,
    sel: npt.NDArray[np.int64],
    icmp_rows: list[tuple[int, PacketRow]],
    at: npt.NDArray[Any] | None,
) -> None:
    """The selected rows of one table, with its ICMP rows in their places."""
    from tcpwhy.report.packets_kernel import FMT_CSV, FMT_JSONL, FMT_TABLE, format_packets

    code = {"table": FMT_TABLE, "csv": FMT_CSV, "jsonl": FMT_JSONL}[fmt]
    t0 = stats.first_ts_ns or 0
    rel_ns = t["ts_ns"] - t0
    time_bits = (rel_ns.astype(np.float64) / 1e9).view(np.int64)
    seq = t["seq"] if absolute else s["rel_seq"]
    ack = t["ack"] if absolute else s["rel_ack"]
    sack_base = np.zeros(len(t), np.uint32) if absolute else t["ack"] - s["rel_ack"]
    vocab, voff, order = _vocab()
    u8, u4, u2 = np.uint64, np.uint32, np.uint16
    cols = (
        _col(t["frame"], u8), rel_ns, time_bits, _col(t["ts_ns"], np.int64),
        _col(t["src_hi"], u8), _col(t["src_lo"], u8), _col(t["dst_hi"], u8),
        _col(t["dst_lo"], u8), _col(t["sport"], u2), _col(t["dport"], u2),
        _col(t["frame_len"], u4), _col(t["flags"], u2), _col(seq, u4), _col(ack, u4),
        _col(s["win_scaled"], np.int64), _col(t["urp"], u2), _col(t["payload_len"], u4),
        _col(t["opt_order"], u4), _col(t["opt_mss"], np.int32), _col(t["opt_ws"], np.int8),
        _col(t["opt_tsval"], u4), _col(t["opt_tsecr"], u4), _col(t["sack_n"], np.uint8),
        _col(t["sack_le"], u4), _col(t["sack_re"], u4), _col(sack_base, np.int64),
        _col(s["stream"], np.int64), _col(a.bits, u4), _col(a.dup_ack_frame, np.int64),
        _col(a.dup_ack_num, np.int64), order, vocab, voff,
    )  # fmt: skip
    buf = np.empty(_BUF_BYTES if len(sel) > 64 else 64 * 4096, np.uint8)
    ends = np.empty(len(buf) // 16 + 1, np.int64)
    k = 0  # next ICMP row
    j = 0
    while j < len(sel) or k < len(icmp_rows):
        # up to the next ICMP row's place
        stop = int(at[k]) if at is not None and k < len(icmp_rows) else len(sel)
        while j < stop:
            n = format_packets(code, -1, sel[:stop], j, *cols, buf, ends)
            if n < 0:  # a time beyond the compiled writer's range: these rows in Python
                _write_python_rows(sink, fmt, t, s, a, absolute, stats, sel[j:stop])
                j = stop
                break
            chunk = buf[: ends[n - 1]].tobytes()
            if code == FMT_JSONL:  # the compiled writer starts each line at "frame"
                chunk = chunk.replace(b'{"frame": ', _JSONL_HEAD)
            sink.write(chunk)
            j += n
        if k < len(icmp_rows):
            sink.write(_row_text(icmp_rows[k][1], fmt).encode())
            k += 1


_JSONL_HEAD = b'{"schema_version": "%s", "frame": ' % SCHEMA_VERSION.encode()


def _versioned(r: PacketRow) -> dict[str, Any]:
    """A jsonl line's object: the row with the schema version first (docs/json.md)."""
    return {"schema_version": SCHEMA_VERSION, **r.as_json()}


def _row_text(r: PacketRow, fmt: str) -> str:
    """One row as `write_packets_rows` writes it."""
    if fmt == "jsonl":
        return json.dumps(_versioned(r), ensure_ascii=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            (r.frame, f"{r.time:.6f}", r.src, r.dst, r.length, r.info)
        )
        return buf.getvalue()
    return f"{r.frame:>7} {r.time:>12.6f} {r.src:>15} → {r.dst:<15} {r.length:>5} {r.info}\n"


def _write_python_rows(
    sink: _Sink,
    fmt: str,
    t: PacketTable,
    s: dict[str, npt.NDArray[Any]],
    a: Any,
    absolute: bool,
    stats: CaptureStats,
    rows: npt.NDArray[np.int64],
) -> None:
    """Rows of one table formatted one by one (times the compiled writer does not print)."""
    t0 = stats.first_ts_ns or 0
    c = chunk_lists(
        t, (*_INFO_COLUMNS, "frame", "frame_len", "src_hi", "src_lo", "dst_hi", "dst_lo")
    )
    seqs = (t["seq"] if absolute else s["rel_seq"]).tolist()
    acks = (t["ack"] if absolute else s["rel_ack"]).tolist()
    bases = [0] * len(t) if absolute else (t["ack"].astype(np.int64) - s["rel_ack"]).tolist()
    parts = []
    for i in rows.tolist():
        f = c["flags"][i]
        ack = acks[i] if f & ACK else 0
        info = info_text(c, i, seqs[i], ack, int(s["win_scaled"][i]), bases[i])
        r = PacketRow(
            frame=c["frame"][i],
            time=float(np.float64(int(t["ts_ns"][i]) - t0) / 1e9),
            src=_addr(c["src_hi"][i], c["src_lo"][i]),
            dst=_addr(c["dst_hi"][i], c["dst_lo"][i]),
            sport=c["sport"][i],
            dport=c["dport"][i],
            length=c["frame_len"][i],
            flags=flag_names(f),
            seq=seqs[i],
            ack=ack,
            len=c["payload_len"][i],
            win=int(s["win_scaled"][i]),
            stream=int(s["stream"][i]),
            analysis=a.names(i),
            info=a.info_prefix(i) + info,
        )
        parts.append(_row_text(r, fmt))
    sink.write("".join(parts).encode())
