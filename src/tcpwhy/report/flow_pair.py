"""`tcpwhy flow A.pcap B.pcap STREAM`: one connection's ladder drawn from two capture points.

When the captures were taken at two points of the path (`tcpwhy.diagnose.pairing` pairs
their connections by ISNs and payload), the ladder has two columns of times: the capture
point nearer the client on the left, the one nearer the server on the right. Each arrow
leaves one end when that point saw it leave and reaches the other when that point saw it
arrive, so it slants by the one-way delay, and segments in flight at the same time (the
keep-alive race: a request crossing the server's FIN) cross. The right-hand point's times
are given in the left-hand point's clock (the pairing's clock offset subtracted), so the
slant is the delay and not the two clocks' difference.

A segment seen at one point only is drawn as what the pair shows it was: lost on the path
(it left one end and never reached the other point: the arrow stops half-way, ✗), injected
on the path (it reached one end and the other end never sent it: the arrow starts
half-way, ◇), or seen once because the other point was not capturing then.

Each endpoint's states are those inferred at the capture point beside it (the client's at
the client-side point, the server's at the server-side point). The rows are built once
(`PairView`) and drawn as text here, as SVG by `tcpwhy.report.svg`, and as JSON
(`flow_json`), like the one-point `LadderView`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from tcpwhy.decode.table import FIN, RST, SYN, CaptureStats
from tcpwhy.report.flow import Ladder, LadderView, _entered, _label, ladder_of_table, ladder_view

BOTH, LOST, INJECTED, ONE_POINT = "both", "lost", "injected", "one_point"


@dataclass
class PairArrow:
    """One segment between the two capture points."""

    to_server: bool
    label: str  # analysis tags, flags, Seq/Ack/Len, as the point that saw it leave shows them
    status: str  # BOTH, LOST, INJECTED or ONE_POINT
    client_t: float | None  # seconds from the client-side capture's first frame
    server_t: float | None  # the same clock (the server-side point's time minus the offset)
    client_frame: int | None
    server_frame: int | None
    client: str = ""  # states the client entered here, at the client-side point
    server: str = ""
    flagged: bool = False
    depart: float = 0.0  # when it left its sender's end (or the middle of the path)
    arrive: float = 0.0  # when it reached the other end (or the middle: lost)
    client_ns: int | None = None  # the frame's time stamp at the client-side point (epoch ns)
    server_ns: int | None = None  # at the server-side point, in that point's own clock

    @property
    def from_middle(self) -> bool:
        return self.status == INJECTED

    @property
    def to_middle(self) -> bool:
        return self.status == LOST


@dataclass
class PairView:
    """A connection's ladder between two capture points."""

    stream: int  # tcp.stream at the first capture point given
    client_point: str  # the capture point nearer the client
    server_point: str
    clock_offset_ms: float | None  # server-side point's clock minus the client-side point's
    delay_to_server_ms: float | None
    delay_to_client_ms: float | None
    client: str
    server: str
    client_start: str
    server_start: str
    client_final: str
    server_final: str
    arrows: list[PairArrow]
    t0_ns: int  # the client-side capture's first frame


def build_flow(
    files: list[str],
    stream: int,
    stats: list[CaptureStats],
    pair: bool = True,
    unpaired: list[str] | None = None,
) -> PairView | Ladder:
    """The ladder of tcp.stream `stream` (numbered as at the first capture point given):
    a `PairView` when another point saw the same connection, else a one-point `Ladder`
    (rotated files joined; `unpaired` says when other points exist but none saw it)."""
    from tcpwhy.diagnose.context import Capture
    from tcpwhy.diagnose.pairing import match_connection, pair_captures
    from tcpwhy.report.conns_points import read_points

    points = read_points(files, stats)
    first = points[0]
    lad_a = ladder_of_table(first.table, stream, first.name)
    if not pair or len(points) < 2:
        return lad_a
    caps = [Capture(p.table, np.zeros(len(p.table), np.int16), p.files) for p in points]
    sid_a = int(np.searchsorted(caps[0].stream_numbers, stream))
    for pp in pair_captures(caps, [p.name for p in points]):
        hit = np.flatnonzero(pp.sids_a == sid_a) if pp.a == 0 else np.zeros(0, np.int64)
        if not len(hit):
            continue
        sid_b = int(pp.sids_b[hit[0]])
        cb = caps[pp.b]
        lad_b = ladder_of_table(points[pp.b].table, int(cb.stream_numbers[sid_b]), "")
        m = match_connection(caps[0], cb, sid_a, sid_b)
        off = pp.clock_offset_ms or 0.0  # B minus A
        ab, ba = pp.a_to_b.delay_ms, pp.b_to_a.delay_ms
        if m.a_near_client:
            sides = ((lad_a, m.rows_a, m.peer_a, caps[0]), (lad_b, m.rows_b, m.peer_b, cb))
            names, delays, offset = (first.name, points[pp.b].name), (ab, ba), off
        else:
            sides = ((lad_b, m.rows_b, m.peer_b, cb), (lad_a, m.rows_a, m.peer_a, caps[0]))
            names, delays, offset = (points[pp.b].name, first.name), (ba, ab), -off
        return _pair_view(stream, sides, names, delays, pp.clock_offset_ms is not None, offset)
    if unpaired is not None:
        unpaired.append(first.name)
    return lad_a


def _pair_view(
    stream: int,
    sides: tuple[Any, Any],
    names: tuple[str, str],
    delays: tuple[float | None, float | None],
    known_offset: bool,
    offset_ms: float,
) -> PairView:
    (lc, rows_c, peer_c, cap_c), (ls, rows_s, peer_s, cap_s) = sides
    vc, vs = ladder_view(lc, 0), ladder_view(ls, 0)
    t0 = lc.t0_ns
    off_ns = offset_ms * 1e6
    d_cs = (delays[0] or 0.0) / 1e3  # seconds
    d_sc = (delays[1] or 0.0) / 1e3
    tc = (lc.table["ts_ns"][rows_c].astype(np.int64) - t0) / 1e9
    ts = (ls.table["ts_ns"][rows_s].astype(np.float64) - off_ns - t0) / 1e9
    # the time both points were capturing (`pairing.measure` counts losses within it alone)
    lo = max(cap_c.start_ns - t0, cap_s.start_ns - off_ns - t0) / 1e9
    hi = min(cap_c.end_ns - t0, cap_s.end_ns - off_ns - t0) / 1e9

    def fate(t: float, d: float, sent_here: bool) -> str:
        """A segment one point saw and the other did not: lost when it should have reached
        the other point while both captured, injected when it should have been sent there."""
        if sent_here:
            return LOST if t >= lo and t + d <= hi else ONE_POINT
        return INJECTED if t - d >= lo and t <= hi else ONE_POINT

    # rows of each ladder by table row (the ladder and the pairing read the same rows)
    k_c = {int(r): k for k, r in enumerate(lc.rows.tolist())}
    k_s = {int(r): k for k, r in enumerate(ls.rows.tolist())}
    c_ent = _entered(lc.client, bool((lc.direction == 0).any()))
    s_ent = _entered(ls.server, bool((ls.direction == 1).any()))

    def label(lad: Ladder, row: int) -> str:
        tags = lad.analysis.info_prefix(row).strip()
        return (tags + " " if tags else "") + _label(lad, row)

    def hot(lad: Ladder, row: int) -> bool:
        return bool(int(lad.table["flags"][row]) & (SYN | FIN | RST)) or bool(
            lad.analysis.bits[row]
        )

    arrows: list[PairArrow] = []
    for i, row in enumerate(rows_c.tolist()):
        to_server = bool(lc.direction[k_c[row]] == 0)
        frame_c = int(lc.table["frame"][row])
        p = int(peer_c[i])
        a = PairArrow(to_server, label(lc, row), BOTH, float(tc[i]), None, frame_c, None)
        a.client_ns = int(lc.table["ts_ns"][row])
        a.client = " → ".join(c_ent.get(frame_c, []))
        a.flagged = hot(lc, row)
        if p >= 0:
            srow = int(rows_s[p])
            frame_s = int(ls.table["frame"][srow])
            a.server_t, a.server_frame = float(ts[p]), frame_s
            a.server_ns = int(ls.table["ts_ns"][srow])
            a.server = " → ".join(s_ent.get(frame_s, []))
            if not to_server:
                a.label = label(ls, srow)
            a.flagged = a.flagged or hot(ls, srow)
        else:
            a.status = fate(float(tc[i]), d_cs if to_server else d_sc, to_server)
        arrows.append(a)
    for i, row in enumerate(rows_s.tolist()):
        if int(peer_s[i]) >= 0:
            continue
        to_server = bool(ls.direction[k_s[row]] == 0)
        frame_s = int(ls.table["frame"][row])
        a = PairArrow(to_server, label(ls, row), BOTH, None, float(ts[i]), None, frame_s)
        a.server_ns = int(ls.table["ts_ns"][row])
        a.server = " → ".join(s_ent.get(frame_s, []))
        a.flagged = hot(ls, row)
        a.status = fate(float(ts[i]), d_cs if to_server else d_sc, not to_server)
        arrows.append(a)
    for a in arrows:
        d = d_cs if a.to_server else d_sc
        at_sender = a.client_t if a.to_server else a.server_t
        at_receiver = a.server_t if a.to_server else a.client_t
        if a.status == BOTH:
            a.depart, a.arrive = at_sender or 0.0, at_receiver or 0.0
        elif a.status == LOST:
            a.depart = at_sender or 0.0
            a.arrive = a.depart + d / 2
        elif a.status == INJECTED:
            a.arrive = at_receiver or 0.0
            a.depart = a.arrive - d / 2
        elif at_sender is not None:  # one point only: the other end's time estimated
            a.depart, a.arrive = at_sender, at_sender + d
        else:
            a.arrive = at_receiver or 0.0
            a.depart = a.arrive - d
        a.arrive = max(a.arrive, a.depart)
        a.flagged = a.flagged or a.status != BOTH or bool(a.client or a.server)
    arrows.sort(key=lambda a: (a.depart, a.arrive))
    return PairView(
        stream,
        names[0],
        names[1],
        offset_ms if known_offset else None,
        delays[0],
        delays[1],
        vc.client,
        vs.server,
        vc.client_start,
        vs.server_start,
        vc.client_final,
        vs.server_final,
        arrows,
        t0,
    )


# ---- text ------------------------------------------------------------------------------

CANVAS = 56  # columns between the two lifelines
CORNERS = "╮╭╯╰│─"


def events(view: PairView) -> list[tuple[float, int, bool]]:
    """The ladder's rows: (time, arrow index, arrival) in time order, a departure before its
    own arrival. Text and SVG lay the arrows out on these rows."""
    ev = [(a.depart, 0, k, False) for k, a in enumerate(view.arrows)]
    ev += [(a.arrive, 1, k, True) for k, a in enumerate(view.arrows)]
    ev.sort()
    return [(t, k, arr) for t, _, k, arr in ev]


def _x_ends(a: PairArrow, width: int) -> tuple[int, int]:
    """Columns (0 to width-1) where an arrow starts and ends."""
    left, right, mid = 0, width - 1, width // 2
    xs = left if a.to_server else right
    xr = right if a.to_server else left
    if a.from_middle:
        xs = mid
    if a.to_middle:
        xr = mid
    return xs, xr


class _Canvas:
    """The arrows' cells, each remembering the direction of the arrow drawn there: an
    arrow crossing one going the other way shows ┼; arrows going the same way in flight
    together share their lines (they never cross)."""

    def __init__(self, rows: int) -> None:
        self.cells = [[" "] * CANVAS for _ in range(rows)]
        self.owner = [[0] * CANVAS for _ in range(rows)]  # 1: to the right, -1: to the left

    def put(self, r: int, x: int, ch: str, way: int, force: bool = False) -> None:
        if not 0 <= x < CANVAS:
            return
        here = self.owner[r][x]
        if force or here == 0:
            self.cells[r][x], self.owner[r][x] = ch, way
        elif here != way and self.cells[r][x] in CORNERS and ch in CORNERS:
            self.cells[r][x] = "┼"

    def text(self, r: int, lo: int, body: str) -> None:
        for c, ch in enumerate(body):
            if 0 <= lo + c < CANVAS:
                self.cells[r][lo + c] = ch
                self.owner[r][lo + c] = 2


def _draw(view: PairView, ev: list[tuple[float, int, bool]]) -> _Canvas:
    """Each arrow as a staircase from its sending row to its receiving row, its horizontal
    progress on each row proportional to the time since it left."""
    cv = _Canvas(len(ev))
    rows_of: dict[int, list[int]] = {}
    for r, (_, k, _) in enumerate(ev):
        rows_of.setdefault(k, []).append(r)
    times = [t for t, _, _ in ev]
    labels: list[tuple[int, int, bool, str]] = []
    for k, a in enumerate(view.arrows):
        i, j = rows_of[k]
        xs, xr = _x_ends(a, CANVAS)
        span = times[j] - times[i]
        right = xr > xs
        way = 1 if right else -1
        cv.put(i, xs, "◇" if a.from_middle else ("╮" if right else "╭"), way, force=True)
        prev = xs
        for r in range(i + 1, j + 1):
            f = (times[r] - times[i]) / span if span > 0 else (r - i) / max(j - i, 1)
            x = xr if r == j else round(xs + (xr - xs) * f)
            if x == prev and r < j:
                cv.put(r, x, "│", way)
                continue
            cv.put(r, prev, "╰" if right else "╯", way)
            for c in range(prev + 1, x) if right else range(x + 1, prev):
                cv.put(r, c, "─", way)
            if r == j:
                cv.put(r, x, "✗" if a.to_middle else ("▶" if right else "◀"), way, force=True)
            else:
                cv.put(r, x, "╮" if right else "╭", way)
            prev = x
        tag = {LOST: " ✗ lost", INJECTED: " ◇ injected", ONE_POINT: " (one point only)"}
        # beside its start, on the side it travels to (from the middle: the empty side)
        labels.append((i, xs, right != a.from_middle, a.label + tag.get(a.status, "")))
    for r, xs, rightward, text in labels:
        body = f" {text} "
        if rightward:
            cv.text(r, max(0, min(xs + 1, CANVAS - len(body))), body[:CANVAS])
        else:
            body = body[-xs:] if xs < len(body) else body
            cv.text(r, xs - len(body), body)
    return cv


def render_pair(view: PairView, out: TextIO) -> None:
    """The two-point ladder as text: times at the client-side point on the left, at the
    server-side point on the right (in the left one's clock), one row per arrival or
    departure; arrows in flight at the same time in opposite directions cross (┼)."""
    ev = events(view)
    cv = _draw(view, ev)
    states = [a.client for a in view.arrows] + [view.client_start, view.client]
    cw = max(len(x) for x in states)
    sw = max(len(x) for x in [a.server for a in view.arrows] + [view.server_start, view.server])
    off = (
        "unknown"
        if view.clock_offset_ms is None
        else f"{view.clock_offset_ms:+.1f} ms (server side minus client side)"
    )

    def ms(v: float | None) -> str:
        return "?" if v is None else f"{v:.1f} ms"

    out.write(
        f"tcp.stream {view.stream} seen at two capture points: {view.client_point} (client side) "
        f"and {view.server_point} (server side)\n"
        f"one-way delay {ms(view.delay_to_server_ms)} to the server, "
        f"{ms(view.delay_to_client_ms)} to the client; clock offset {off}, "
        "estimated assuming a symmetric path: server-side times are in the client side's clock\n"
    )
    out.write(
        f"{'time':>10} {'frame':>5} {view.client:>{cw}}  {'':{CANVAS}}  {view.server:<{sw}} "
        f"{'time':>10} {'frame':>5}\n"
    )
    out.write(f"{'':>10} {'':>5} {view.client_start:>{cw}} |{' ' * CANVAS}| {view.server_start}\n")
    estimated = False
    for r, (t, k, arrival) in enumerate(ev):
        a = view.arrows[k]
        in_middle = (arrival and a.to_middle) or (not arrival and a.from_middle)
        at_client = not in_middle and arrival != a.to_server
        at_server = not in_middle and arrival == a.to_server
        ct = cf = cs = st = sf = ss = ""
        if at_client:
            ct = f"{t:.6f}" if a.client_t is not None else f"~{t:.6f}"
            cf = "" if a.client_frame is None else str(a.client_frame)
            cs = a.client
        if at_server:
            st = f"{t:.6f}" if a.server_t is not None else f"~{t:.6f}"
            sf = "" if a.server_frame is None else str(a.server_frame)
            ss = a.server
        estimated |= ct.startswith("~") or st.startswith("~")
        out.write(
            f"{ct:>10} {cf:>5} {cs:>{cw}} |{''.join(cv.cells[r])}| {ss:<{sw}} {st:>10} {sf:>5}"
            .rstrip() + "\n"
        )  # fmt: skip
    out.write(
        f"final states at end of capture: client {view.client_final}, server {view.server_final}\n"
    )
    if estimated:
        out.write(
            "~: when the other end would have seen it, from the median one-way delay (that "
            "capture point was not capturing then)\n"
        )


# ---- JSON ------------------------------------------------------------------------------


def flow_json(view: PairView | LadderView, stream: int, points: list[str]) -> dict[str, Any]:
    """The ladder as a JSON document (docs/schemas/flow.schema.json): one entry per arrow,
    with its time and frame at each capture point that saw it, and both endpoints' states."""
    from tcpwhy.schemas import SCHEMA_VERSION
    from tcpwhy.timestamps import rfc3339

    def states(text: str) -> list[str]:
        return [s for s in text.split(" → ") if s]

    def r6(v: float | None) -> float | None:
        return None if v is None else round(v, 6)

    def at(point: int, rel_s: float | None, ns: int | None, frame: int | None) -> dict[str, Any]:
        """One point's sighting: `rel_s` on the ladder's axis, `ts`/`ts_ns` the instant
        by that point's clock (docs/json.md: time)."""
        return {
            "point": point,
            "rel_s": r6(rel_s),
            "ts": None if ns is None else rfc3339(ns),
            "ts_ns": ns,
            "frame": frame,
        }

    doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "stream": stream}
    rows: list[dict[str, Any]] = []
    if isinstance(view, PairView):
        doc["points"] = [view.client_point, view.server_point]
        doc["clock_offset_ms"] = (
            None if view.clock_offset_ms is None else round(view.clock_offset_ms, 3)
        )
        doc["delay_ms"] = {
            "to_server": r6(view.delay_to_server_ms),
            "to_client": r6(view.delay_to_client_ms),
        }
        for a in view.arrows:
            at_: list[dict[str, Any]] = []
            if a.client_t is not None:
                at_.append(at(0, a.client_t, a.client_ns, a.client_frame))
            if a.server_t is not None:
                at_.append(at(1, a.server_t, a.server_ns, a.server_frame))
            rows.append(
                {
                    "kind": "packet",
                    "direction": "to_server" if a.to_server else "to_client",
                    "label": a.label,
                    "status": a.status,
                    "at": at_,
                    "client_states": states(a.client),
                    "server_states": states(a.server),
                    "flagged": a.flagged,
                }
            )
    else:
        doc["points"] = points[:1]
        doc["clock_offset_ms"] = None
        doc["delay_ms"] = None
        for r in view.rows:
            d: dict[str, Any] = {"kind": r.kind, "label": r.label}
            if r.kind in ("packet", "timer"):
                d["direction"] = "to_server" if r.to_server else "to_client"
                d["status"] = ONE_POINT
                ns = view.t0_ns + round(r.rel_s * 1e9)  # exact: rel_s was (ns - t0_ns) / 1e9
                d["at"] = [at(0, r.rel_s, ns, r.frame if r.kind == "packet" else None)]
                d["client_states"] = states(r.client)
                d["server_states"] = states(r.server)
                d["flagged"] = r.flagged
            rows.append(d)
    doc["client"] = {
        "endpoint": view.client.removeprefix("client "),
        "start": view.client_start,
        "final": view.client_final,
    }
    doc["server"] = {
        "endpoint": view.server.removeprefix("server "),
        "start": view.server_start,
        "final": view.server_final,
    }
    doc["rows"] = rows
    return doc


def cmd_flow_points(args: Any) -> int:
    """`tcpwhy flow FILE… STREAM`: one file's ladder or the paired one, as text, SVG or JSON."""
    import json
    import sys

    from tcpwhy.cli_helpers import report_stats, shown
    from tcpwhy.filter import filter_from_args
    from tcpwhy.views import flow_model

    files: list[str] = list(args.files)
    stats = [CaptureStats() for _ in files]
    flt = filter_from_args(args)
    alone: list[str] = []
    # the ladder as `Capture.flow` has it
    pair = not getattr(args, "no_pair", False)
    got = flow_model(files, args.stream, stats, flt, pair=pair, unpaired=alone)
    # said before the ladder: a reader of the text sees it first (points are named as the
    # user named them already, `read_points`)
    for name in alone:
        print(
            f"tcpwhy: note: tcp.stream {args.stream} of {name} was not seen at the other "
            "capture points: drawn from that point alone",
            file=sys.stderr,
        )
    fmt = args.format
    if isinstance(got, PairView):
        if fmt == "json":
            doc = flow_json(got, args.stream, [shown(f) for f in files])
            sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        elif fmt == "svg":
            from tcpwhy.report.svg import render_pair_svg

            body = render_pair_svg(got, title=f"tcp.stream {args.stream}")
            sys.stdout.write('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n")
        else:
            render_pair(got, sys.stdout)
    else:
        view = ladder_view(got, args.fold)
        if fmt == "json":
            doc = flow_json(view, args.stream, [", ".join(map(shown, files))])
            sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        elif fmt == "svg":
            from tcpwhy.report.svg import render_svg

            body = render_svg(view, title=f"tcp.stream {args.stream}")
            sys.stdout.write('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n")
        else:
            from tcpwhy.report.flow import render

            render(got, sys.stdout, fold=args.fold)
    for f, st in zip(files, stats, strict=True):
        report_stats(f, st)
    return 0
