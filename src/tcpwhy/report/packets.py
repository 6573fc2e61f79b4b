"""`tcpwhy packets`: the packet list as Wireshark's list pane shows it."""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

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

    def as_json(self) -> dict[str, Any]:
        return {
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
        for i in range(len(t)):
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


def write_packets(
    source: str,
    fmt: str = "table",
    absolute: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
) -> CaptureStats:
    """Print the packet list; a pipe on stdin is printed as packets arrive."""
    out = out if out is not None else sys.stdout
    stats = stats if stats is not None else CaptureStats()
    live = source == "-"
    rows = iter_rows(source, stats, absolute, limit, flt)
    if fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(r.as_json(), ensure_ascii=False) + "\n")
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
