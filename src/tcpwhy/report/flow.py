"""`tcpwhy flow FILE STREAM`: the ladder diagram of one connection, with both endpoints' states.

The picture engineers draw of the three-way and four-way handshakes: client
on the left, server on the right, one arrow per segment with its flags,
relative Seq/Ack, Len and analysis flags, and beside each arrow the state
each endpoint enters there (from the state machine in tcpwhy.tcp.state).
Runs of data segments in which no state changes and nothing is flagged fold
into one line, so a long transfer does not hide the handshakes.

States are inferred at the capture point: the endpoint on the far side of it
enters its state when the segment passed the capture point, not when the
segment reached it (see docs/state-machine.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from tcpwhy.capture import iter_tables
from tcpwhy.capture.reader import CHUNK_BYTES
from tcpwhy.decode.table import (
    ACK,
    FIN,
    RST,
    SYN,
    CaptureStats,
    PacketTable,
    endpoint_text,
    format_addr,
)
from tcpwhy.errors import TcpwhyError
from tcpwhy.filter import DisplayFilter
from tcpwhy.report.packets import flag_names
from tcpwhy.tcp.analysis import Analysis
from tcpwhy.tcp.sides import client_dir
from tcpwhy.tcp.state import (
    NO_FRAME,
    Endpoint,
    IcmpErrorRows,
    State,
    icmp_errors,
    run_rows,
    state_label,
)
from tcpwhy.tcp.streams import StreamTracker

ARROW = 58  # width of the arrow between the two lifelines


@dataclass
class Ladder:
    """One connection's packets and both endpoints' state timelines."""

    table: PacketTable
    rows: npt.NDArray[np.int64]
    direction: npt.NDArray[np.int8]  # 0: client -> server
    rel_seq: npt.NDArray[np.uint32]
    rel_ack: npt.NDArray[np.uint32]
    analysis: Analysis
    client: Endpoint
    server: Endpoint
    t0_ns: int
    end_ns: int
    shown: npt.NDArray[np.bool_] | None = None  # per table row: the display filter matched it
    # ICMP errors about the connection: (table row they come before, time, frame, toward the
    # server, label), in capture order
    icmp: list[tuple[int, int, int, bool, str]] = field(default_factory=list)


def build_ladder(
    source: str,
    stream: int,
    stats: CaptureStats | None = None,
    flt: DisplayFilter | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Ladder:
    """The ladder of tcp.stream `stream` of one capture, read chunk by chunk (of about
    `chunk_bytes`): only the stream's packets, their analysis and the ICMP errors about it
    are kept, so memory follows the connection, not the capture (read whole first, one
    stream of a 664 MB capture of 239 k connections took 3.1 GB and 6 s; now 98 MB and
    0.8 s). The same ladder as `ladder_of_table`'s of the whole table."""
    from tcpwhy.views import tracked_chunks

    stats = stats if stats is not None else CaptureStats()
    parts: list[PacketTable] = []
    cols: dict[str, list[npt.NDArray[Any]]] = {"dir": [], "rel_seq": [], "rel_ack": []}
    analyses: list[Analysis] = []
    shown: list[npt.NDArray[np.bool_]] = []
    about: dict[str, list[npt.NDArray[Any]]] = {"stream": [], "dir": []}
    end_ns = None
    tracker = StreamTracker()
    chunks = tracked_chunks(
        iter_tables(source, stats, chunk_bytes, reuse=True, prefetch=True),
        flt,
        first_ts_ns=lambda: stats.first_ts_ns,
        tracker=tracker,
    )
    for ch in chunks:
        t, st, a = ch.table, ch.streams, ch.analysis
        assert a is not None
        if len(t):
            end_ns = int(t["ts_ns"][-1])
        rows = np.flatnonzero(st["stream"] == stream)
        part = _without_payload(t, rows)
        got = tracker.icmp_out
        if t.icmp is not None and got is not None:
            j = np.flatnonzero(got["stream"] == stream)
            if len(j):
                ic = _without_payload(t.icmp, j)
                # before the same packet of the stream as before the same row of the chunk
                at = np.searchsorted(rows, ic["icmp_at"].astype(np.int64), "left")
                ic.cols["icmp_at"] = at.astype(ic["icmp_at"].dtype)
                part.icmp = ic
                about["stream"].append(np.asarray(got["stream"])[j])
                about["dir"].append(np.asarray(got["dir"])[j])
        if not len(rows) and part.icmp is None:
            continue
        parts.append(part)
        for k, v in cols.items():
            v.append(st[k][rows])
        analyses.append(_take_analysis(a, rows))
        if ch.keep is not None:
            shown.append(ch.keep[rows])
    if not any(len(p) for p in parts):
        n = tracker.next_stream
        raise TcpwhyError(
            source,
            f"no TCP stream {stream} (the capture has streams 0 to {n - 1})"
            if n
            else "no TCP packets",
        )
    t = PacketTable.concat(parts)
    s = {k: np.concatenate(v) for k, v in cols.items()}
    a = Analysis(
        **{f.name: np.concatenate([getattr(x, f.name) for x in analyses]) for f in fields(Analysis)}
    )
    rows = np.arange(len(t), dtype=np.int64)
    joined = {k: np.concatenate(v) for k, v in about.items()} if about["stream"] else None
    return _ladder(
        t,
        rows,
        s,
        a,
        stream,
        int(stats.first_ts_ns if stats.first_ts_ns is not None else t["ts_ns"][0]),
        int(end_ns if end_ns is not None else t["ts_ns"][-1]),
        np.concatenate(shown) if flt is not None else None,
        icmp_errors(t.icmp, joined),
        _IcmpOf(joined),
    )


@dataclass
class _IcmpOf:
    """What `icmp_rows` reads of a tracker: the stream and direction of each ICMP row."""

    icmp_out: dict[str, npt.NDArray[Any]] | None


def _without_payload(t: PacketTable, rows: npt.NDArray[np.int64]) -> PacketTable:
    """Copies of `rows` (the reader reuses its buffers for the next chunk) without their
    payload bytes, which a ladder never reads (it shows their length): one 200 MB connection
    kept them twice over while the parts were joined."""
    cols = {k: v[rows] for k, v in t.cols.items()}
    cols["payload_off"] = np.zeros(len(rows), t.cols["payload_off"].dtype)
    cols["payload_cap"] = np.zeros(len(rows), t.cols["payload_cap"].dtype)
    return PacketTable(cols)


def _take_analysis(a: Analysis, rows: npt.NDArray[np.int64]) -> Analysis:
    return Analysis(**{f.name: getattr(a, f.name)[rows] for f in fields(Analysis)})


def ladder_of_table(
    t: PacketTable,
    stream: int,
    source: str,
    first_ts_ns: int | None = None,
    flt: DisplayFilter | None = None,
) -> Ladder:
    """The ladder of tcp.stream `stream` of a whole capture's table already read (`source`
    names it in errors; times count from `first_ts_ns`, the capture's first frame)."""
    from tcpwhy.views import tracked_chunks

    t0 = first_ts_ns if first_ts_ns is not None else int(t["ts_ns"][0]) if len(t) else 0
    whole = next(tracked_chunks([t], flt, first_ts_ns=t0))
    s, a, shown = whole.streams, whole.analysis, whole.keep
    assert a is not None
    rows = np.nonzero(s["stream"] == stream)[0]
    if rows.size == 0:
        n = int(s["stream"].max()) + 1 if len(t) else 0
        raise TcpwhyError(
            source,
            f"no TCP stream {stream} (the capture has streams 0 to {n - 1})"
            if n
            else "no TCP packets",
        )
    errors = icmp_errors(t.icmp, whole.tracker.icmp_out)
    return _ladder(t, rows, s, a, stream, t0, int(t["ts_ns"][-1]), shown, errors, whole.tracker)


def _ladder(
    t: PacketTable,
    rows: npt.NDArray[np.int64],
    s: dict[str, npt.NDArray[Any]],
    a: Analysis,
    stream: int,
    t0: int,
    end_ns: int,
    shown: npt.NDArray[np.bool_] | None,
    errors: dict[str, npt.NDArray[Any]],
    tracker: StreamTracker | _IcmpOf,
) -> Ladder:
    """The ladder of the stream's `rows` of `t`: which side is the client, both endpoints'
    states, the ICMP errors about it (`errors`: the table's, `tracker`: whose `icmp_out`
    names their streams)."""
    cdir = s["dir"][rows]
    client = client_dir(t, rows, cdir)
    direction = (cdir != client).astype(np.int8)
    states = run_rows(
        t, rows, direction, end_ns=end_ns, icmp=icmp_errors_of(errors, stream, client)
    )
    return Ladder(
        t,
        rows,
        direction,
        s["rel_seq"],
        s["rel_ack"],
        a,
        states.originator,
        states.responder,
        t0,
        end_ns,
        shown,
        icmp_rows(t, tracker, stream, client),
    )


def icmp_errors_of(e: dict[str, npt.NDArray[Any]], stream: int, client: int) -> IcmpErrorRows:
    """The errors of a table's `tcpwhy.tcp.state.icmp_errors` (not "too big") about `stream`,
    for the state machine: each keyed by the table row it came before, `client`'s (its
    direction's) as side 0."""
    j = np.flatnonzero(e["stream"] == stream)
    return IcmpErrorRows(
        np.zeros(len(j), np.int64),
        e["at"][j],
        (e["dir"][j] != client).astype(np.uint8),
        e["ts_ns"][j],
        e["frame"][j],
    )


def icmp_rows(
    t: PacketTable, tracker: StreamTracker | _IcmpOf, stream: int, client: int
) -> list[tuple[int, int, int, bool, str]]:
    """The ICMP errors about `stream`: each drawn as an arrow toward the side whose segment
    it quotes, labelled with its type, code (tshark's words), MTU and sender."""
    from tcpwhy.report.packets import icmp_code_text

    ic, got = t.icmp, tracker.icmp_out
    if ic is None or got is None:
        return []
    out = []
    for j in np.flatnonzero(got["stream"] == stream).tolist():
        v, ty, code = int(ic["ip_version"][j]), int(ic["icmp_type"][j]), int(ic["icmp_code"][j])
        text = icmp_code_text(v, ty, code) or "Packet too big"
        mtu = int(ic["icmp_mtu"][j])
        sender = format_addr(ic["icmp_src_hi"][j], ic["icmp_src_lo"][j])
        # the sender first: a long code name is what the arrow's width cuts
        label = f"ICMP{'v6' if v == 6 else ''} {ty}/{code} from {sender}: "
        label += (f"MTU {mtu}, " if mtu else "") + text
        to_server = int(got["dir"][j]) != client  # toward the quoted segment's sender
        out.append(
            (int(ic["icmp_at"][j]), int(ic["ts_ns"][j]), int(ic["frame"][j]), to_server,
             label)
        )  # fmt: skip
    return out


def _name(ep: Endpoint, state: State, sent: bool = True) -> str:
    return state_label(state, [s.state for s in ep.timeline], sent)


def _entered(ep: Endpoint, sent: bool) -> dict[int, list[str]]:
    """Frame -> states entered at that frame (several when one segment moves it twice)."""
    out: dict[int, list[str]] = {}
    for step in ep.timeline[1:]:
        if step.frame != NO_FRAME:
            out.setdefault(step.frame, []).append(_name(ep, step.state, sent))
    return out


def _label(lad: Ladder, i: int) -> str:
    t = lad.table
    f = int(t["flags"][i])
    names = flag_names(f)
    text = f"{', '.join(names) if names else '<None>'}  Seq={lad.rel_seq[i]}"
    if f & ACK:
        text += f" Ack={lad.rel_ack[i]}"
    text += f" Len={t['payload_len'][i]}"
    return text


def _arrow(text: str, to_right: bool) -> str:
    body = f" {text} "
    room = ARROW - 2
    if len(body) > room - 4:
        body = body[: room - 5] + "… "
    fill = room - len(body)
    left, right = 2, fill - 2
    if to_right:
        return "|" + "─" * left + body + "─" * (right - 1) + "▶|"
    return "|◀" + "─" * (left - 1) + body + "─" * right + "|"


@dataclass
class LadderRow:
    """One line of a ladder, as both the text (`render`) and the SVG (`tcpwhy.report.svg`)
    draw it: a packet (`kind` "packet"), a fold of uneventful segments ("fold"), packets
    hidden by the display filter ("hidden") or a timer that fired after the last packet
    ("timer")."""

    kind: str
    rel_s: float = 0.0
    frame: int = 0
    to_server: bool = True
    label: str = ""  # packet: analysis tags, flags, Seq/Ack/Len; fold/hidden/timer: the text
    client: str = ""  # states the client entered here ("A → B" when two)
    server: str = ""
    flagged: bool = False  # decisive: flags SYN/FIN/RST, an analysis flag, or a state change


@dataclass
class LadderView:
    """What a ladder shows, computed once from a `Ladder`."""

    client: str  # "client 10.0.0.1:40938"
    server: str
    client_start: str
    server_start: str
    rows: list[LadderRow]
    client_final: str
    server_final: str
    t0_ns: int = 0  # the instant rows' `rel_s` count from (the capture's first frame)


def ladder_view(lad: Ladder, fold: int = 3) -> LadderView:
    """The rows of the ladder: one per packet, folds and filter gaps, then the timers."""
    t = lad.table
    r0 = lad.rows[0]
    cd = lad.direction[0]
    # addresses of the client (sender when direction is 0)
    if cd == 0:
        c = (format_addr(t["src_hi"][r0], t["src_lo"][r0]), int(t["sport"][r0]))
        s = (format_addr(t["dst_hi"][r0], t["dst_lo"][r0]), int(t["dport"][r0]))
    else:
        c = (format_addr(t["dst_hi"][r0], t["dst_lo"][r0]), int(t["dport"][r0]))
        s = (format_addr(t["src_hi"][r0], t["src_lo"][r0]), int(t["sport"][r0]))
    c_sent, s_sent = bool((lad.direction == 0).any()), bool((lad.direction == 1).any())
    c_ent, s_ent = _entered(lad.client, c_sent), _entered(lad.server, s_sent)
    start_c = _name(lad.client, lad.client.timeline[0].state) + (
        " (assumed)" if lad.client.assumed else ""
    )
    start_s = _name(lad.server, lad.server.timeline[0].state) + (
        " (assumed)" if lad.server.assumed else ""
    )

    # ICMP errors, each before the first of the connection's packets after it (else at the end)
    before: dict[int, list[LadderRow]] = {}
    pos = lad.rows
    for at, ts, frame_no, to_server, text in lad.icmp:
        k_at = int(np.searchsorted(pos, at))
        key = int(pos[k_at]) if k_at < len(pos) else -1
        row = LadderRow(
            "packet",
            (ts - lad.t0_ns) / 1e9,
            frame_no,
            to_server,
            text,
            " → ".join(c_ent.get(frame_no, [])),
            " → ".join(s_ent.get(frame_no, [])),
            flagged=True,
        )
        before.setdefault(key, []).append(row)

    def quiet(i: int) -> bool:
        if i in before:
            return False
        frame = int(t["frame"][i])
        f = int(t["flags"][i])
        return (
            frame not in c_ent
            and frame not in s_ent
            and not (f & (SYN | FIN | RST))
            and lad.analysis.bits[i] == 0
        )

    out: list[LadderRow] = []
    rows = lad.rows.tolist()
    k = 0
    while k < len(rows):
        i = rows[k]
        out.extend(before.pop(i, []))
        if lad.shown is not None and not lad.shown[i]:
            j = k
            while j < len(rows) and not lad.shown[rows[j]] and (j == k or rows[j] not in before):
                j += 1
            text = f"… {j - k:,} packet{'s' if j - k > 1 else ''} not matching the filter …"
            out.append(LadderRow("hidden", label=text))
            k = j
            continue
        if fold and quiet(i):
            j = k
            while j < len(rows) and quiet(rows[j]):
                j += 1
            if j - k >= fold:
                seg = lad.rows[k:j]
                data = t["payload_len"][seg] > 0
                nbytes = int(t["payload_len"][seg].sum())
                text = (
                    f"… {int(data.sum()):,} data segments, "
                    f"{_size(nbytes)}, {int((~data).sum()):,} pure ACKs, 0 flagged …"
                )
                out.append(LadderRow("fold", label=text))
                k = j
                continue
        frame = int(t["frame"][i])
        tags = lad.analysis.info_prefix(i).strip()
        out.append(
            LadderRow(
                "packet",
                (int(t["ts_ns"][i]) - lad.t0_ns) / 1e9,
                frame,
                bool(lad.direction[k] == 0),
                (tags + " " if tags else "") + _label(lad, i),
                " → ".join(c_ent.get(frame, [])),
                " → ".join(s_ent.get(frame, [])),
                not quiet(i),
            )
        )
        k += 1
    out.extend(before.pop(-1, []))
    # timers after the last packet (TIME_WAIT ending)
    for side, ep in (("client", lad.client), ("server", lad.server)):
        for step in ep.timeline[1:]:
            if step.frame == NO_FRAME:
                out.append(
                    LadderRow(
                        "timer",
                        (step.ts_ns - lad.t0_ns) / 1e9,
                        to_server=side == "client",
                        label=f"{side} enters {step.state.name} (2MSL timer expired)",
                        client=step.state.name if side == "client" else "",
                        server=step.state.name if side == "server" else "",
                        flagged=True,
                    )
                )
    return LadderView(
        f"client {endpoint_text(*c)}",
        f"server {endpoint_text(*s)}",
        start_c,
        start_s,
        out,
        _name(lad.client, lad.client.state, c_sent),
        _name(lad.server, lad.server.state, s_sent),
        lad.t0_ns,
    )


def render(lad: Ladder, out: TextIO, fold: int = 3) -> None:
    v = ladder_view(lad, fold)
    state_w = 25
    out.write(
        f"{'time':>11} {'frame':>7}  {v.client:<{state_w + ARROW // 2}}{v.server:>{ARROW // 2}}\n"
    )
    out.write(
        f"{'':>11} {'':>7}  {v.client_start:<{state_w}}|{' ' * (ARROW - 2)}|  {v.server_start}\n"
    )
    for r in v.rows:
        if r.kind in ("hidden", "fold"):
            out.write(f"{'':>11} {'':>7}  {'':<{state_w}}|  {r.label}\n")
        elif r.kind == "timer":
            out.write(f"{r.rel_s:>11.6f} {'':>7}  {r.label}\n")
        else:
            out.write(
                f"{r.rel_s:>11.6f} {r.frame:>7}  {r.client:<{state_w}}"
                f"{_arrow(r.label, r.to_server)}  {r.server}\n"
            )
    out.write(f"final states at end of capture: client {v.client_final}, server {v.server_final}\n")


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} MB"
    if n >= 1_000:
        return f"{n / 1e3:.1f} kB"
    return f"{n} bytes"
