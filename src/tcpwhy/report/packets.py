"""`tcpwhy packets`: the packet list as Wireshark's list pane shows it."""

from __future__ import annotations

import csv
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


def flag_names(flags: int) -> list[str]:
    names = [name for bit, name in FLAG_NAMES if flags & bit]
    return names


def info_text(t: PacketTable, i: int, seq: int, ack: int, win: int, sack_base: int) -> str:
    """Wireshark's TCP Info column for row i (relative or absolute numbers already chosen)."""
    f = int(t["flags"][i])
    names = flag_names(f)
    parts = [f"{t['sport'][i]} → {t['dport'][i]} [{', '.join(names) if names else '<None>'}]"]
    parts.append(f"Seq={seq}")
    if f & ACK:
        parts.append(f"Ack={ack}")
    parts.append(f"Win={win}")
    if f & URG:
        parts.append(f"Urg={t['urp'][i]}")
    parts.append(f"Len={t['payload_len'][i]}")
    order = int(t["opt_order"][i])
    while order:
        code = order & 7
        order >>= 3
        if code == OPT_MSS:
            parts.append(f"MSS={t['opt_mss'][i]}")
        elif code == OPT_WS:
            parts.append(f"WS={1 << min(int(t['opt_ws'][i]), 14)}")
        elif code == OPT_SACK_PERM:
            parts.append("SACK_PERM")
        elif code == OPT_TS:
            parts.append(f"TSval={t['opt_tsval'][i]} TSecr={t['opt_tsecr'][i]}")
        elif code == OPT_SACK:
            for k in range(int(t["sack_n"][i])):
                le = (int(t["sack_le"][i, k]) - sack_base) & 0xFFFFFFFF
                re = (int(t["sack_re"][i, k]) - sack_base) & 0xFFFFFFFF
                parts.append(f"SLE={le} SRE={re}")
    return " ".join(parts)


@dataclass
class PacketRow:
    frame: int
    time: float
    src: str
    dst: str
    sport: int
    dport: int
    length: int
    flags: list[str]
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
            "flags": self.flags,
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
        rel_t = (t["ts_ns"] - t0).astype(np.float64) / 1e9
        seqs = t["seq"] if absolute else s["rel_seq"]
        acks = t["ack"] if absolute else s["rel_ack"]
        # SACK edges are in the other direction's sequence space: base = raw ack - rel ack
        sack_base = (
            np.zeros(len(t), np.int64) if absolute else (t["ack"].astype(np.int64) - s["rel_ack"])
        )
        for i in range(len(t)):
            if limit is not None and shown >= limit:
                return
            if keep is not None and not keep[i]:
                continue
            f = int(t["flags"][i])
            ack = int(acks[i]) if f & ACK else 0
            yield PacketRow(
                frame=int(t["frame"][i]),
                time=float(rel_t[i]),
                src=format_addr(t["src_hi"][i], t["src_lo"][i]),
                dst=format_addr(t["dst_hi"][i], t["dst_lo"][i]),
                sport=int(t["sport"][i]),
                dport=int(t["dport"][i]),
                length=int(t["frame_len"][i]),
                flags=flag_names(f),
                seq=int(seqs[i]),
                ack=ack,
                len=int(t["payload_len"][i]),
                win=int(s["win_scaled"][i]),
                stream=int(s["stream"][i]),
                analysis=a.names(i),
                info=a.info_prefix(i)
                + info_text(t, i, int(seqs[i]), ack, int(s["win_scaled"][i]), int(sack_base[i])),
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
