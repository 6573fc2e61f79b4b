"""Two captures of the same connections from different points of the path, paired.

A connection is recognised at both points by what travels unchanged end to end: the
initial sequence numbers of its handshake (the client's SYN, the server's SYN-ACK), else
the sequence number and first payload bytes of the client's first data segment. Addresses
and ports are not used, so a NAT or a load balancer that rewrites them between the
capture points does not hide the pair. A segment is recognised at both points by its
direction, sequence and acknowledgment numbers, flags and length (the k-th copy of a
resent segment, counted from the last, matches the k-th at the other point: the copy
that got through is the last one sent).

What the pair then measures, per direction: the one-way delay, the segments one point
sent that never reached the other (lost on the path), and the segments one point saw
that the other end never sent (injected on the path: a middlebox's RST). The two
captures usually come from two hosts with two clocks: their offset is estimated from
the fastest segment each way, assuming the path is as fast one way as the other, and
the delays are measured relative to it.

Everything is numpy over whole columns (a capture may hold 100 k connections); only the
few injected segments are looked at one by one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Capture, Conn
from tcpwhy.diagnose.model import Step
from tcpwhy.diagnose.registry import Instance

U64 = np.uint64
MATCH_FLAGS = FIN | SYN | RST | ACK  # PSH and ECN bits may change on the way (offloads, routers)
NONE = np.iinfo(np.int64).min


def _mix(*cols: npt.NDArray[Any]) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of equal-length integer columns (splitmix64 finaliser over each in
    turn): keys to sort and intersect, where a collision costs one wrong match in 2**64."""
    h = np.full(len(cols[0]), 0x9E3779B97F4A7C15, U64)
    with np.errstate(over="ignore"):
        for c in cols:
            h ^= c.astype(np.int64).view(U64) + U64(0x9E3779B97F4A7C15) + (h << U64(6))
            h ^= h >> U64(30)
            h *= U64(0xBF58476D1CE4E5B9)
            h ^= h >> U64(27)
            h *= U64(0x94D049BB133111EB)
            h ^= h >> U64(31)
    return h


def _head_bytes(cap: Capture, rows: npt.NDArray[np.int64], n: int = 8) -> npt.NDArray[np.int64]:
    """The first `n` captured payload bytes of each row as one integer (0-padded)."""
    t = cap.table
    if not len(rows):
        return np.zeros(0, np.int64)
    data, off, cap_len = t.gather(rows, n)  # wherever the table keeps the bytes
    k = np.arange(n)
    pos = off[:, None] + k[None, :]
    ok = k[None, :] < cap_len[:, None]
    pos = np.where(ok, np.minimum(pos, max(len(data) - 1, 0)), 0)
    got = data[pos] if len(data) else np.zeros(pos.shape, np.uint8)
    got = np.where(ok, got, 0).astype(np.int64)
    return (got << (8 * k[None, :])).sum(1)


def signatures(cap: Capture) -> npt.NDArray[np.uint64]:
    """Per stream: what identifies the connection at any point of the path (0: nothing)."""
    t = cap.table
    n = cap.nstreams
    sig = np.zeros(n, U64)
    if not n:
        return sig
    kind = t["flags"] & (SYN | ACK | RST)
    syn = cap.first_rows((kind == SYN) & (cap.side == CLIENT))
    sa = cap.first_rows((kind == (SYN | ACK)) & (cap.side == SERVER))
    seq = t["seq"].astype(np.int64)
    has = syn >= 0
    isn_s = np.where(sa >= 0, seq[np.maximum(sa, 0)], -1)
    sig[has] = _mix(np.ones(int(has.sum()), np.int64), seq[syn[has]], isn_s[has])
    # without a SYN: the client's first data segment
    first = cap.first_rows(t.data_mask() & (cap.side == CLIENT))
    m = ~has & (first >= 0)
    rows = first[m].astype(np.int64)
    sig[m] = _mix(
        np.full(len(rows), 2, np.int64),
        seq[rows],
        t["payload_len"][rows].astype(np.int64),
        _head_bytes(cap, rows),
    )
    return sig


def match_streams(
    sig_a: npt.NDArray[np.uint64], sig_b: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stream ids paired between two captures: signatures present once on each side."""

    def singles(
        sig: npt.NDArray[np.uint64],
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        ids = np.flatnonzero(sig != 0)
        vals, first, counts = np.unique(sig[ids], return_index=True, return_counts=True)
        keep = counts == 1
        return vals[keep], ids[first[keep]]

    va, ia = singles(sig_a)
    vb, ib = singles(sig_b)
    _, ka, kb = np.intersect1d(va, vb, assume_unique=True, return_indices=True)
    return ia[ka].astype(np.int64), ib[kb].astype(np.int64)


@dataclass
class _Rows:
    """One capture's rows of the paired connections."""

    rows: npt.NDArray[np.int64]  # row in the capture's table
    pid: npt.NDArray[np.int64]  # pair index
    side: npt.NDArray[np.int8]
    ts: npt.NDArray[np.int64]
    key: npt.NDArray[np.uint64]  # segment key including its copy rank (from the last)
    seg: npt.NDArray[np.uint64]  # segment key without the rank
    data: npt.NDArray[np.bool_]
    rst: npt.NDArray[np.bool_]
    flags: npt.NDArray[np.int64]


def _rows(cap: Capture, sids: npt.NDArray[np.int64]) -> _Rows:
    pid_of = np.full(cap.nstreams, -1, np.int64)
    pid_of[sids] = np.arange(len(sids))
    rows = np.flatnonzero(pid_of[cap.stream] >= 0) if len(cap.stream) else np.zeros(0, np.int64)
    t = cap.table
    pid = pid_of[cap.stream[rows]]
    side = cap.side[rows]
    flags = t["flags"][rows].astype(np.int64)
    plen = t["payload_len"][rows].astype(np.int64)
    ts = t["ts_ns"][rows].astype(np.int64)
    seg = _mix(
        pid,
        side.astype(np.int64),
        t["seq"][rows].astype(np.int64),
        np.where(flags & ACK, t["ack"][rows].astype(np.int64), 0),
        flags & MATCH_FLAGS,
        plen,
    )
    # copy rank counted from the last: sort by (segment, time descending)
    order = np.lexsort((-ts, seg))
    s = seg[order]
    start = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, np.bool_)
    grp_start = np.maximum.accumulate(np.where(start, np.arange(len(s)), 0)) if len(s) else s
    rank = np.empty(len(s), np.int64)
    rank[order] = np.arange(len(s)) - grp_start
    key = _mix(seg.view(np.int64), rank)
    return _Rows(rows, pid, side, ts, key, seg, plen > 0, (flags & RST) != 0, flags)


@dataclass
class Direction:
    """One direction of the path between two capture points."""

    delay_ms: float | None
    lost: int
    resent: int = 0
    resent_after_loss: int = 0  # the earlier copy never reached the other point
    resent_after_arrival: int = 0  # it did: the receiving host dropped it, or its ACK was lost

    def to_json(self) -> dict[str, Any]:
        return {
            "delay_ms": None if self.delay_ms is None else round(self.delay_ms, 3),
            "lost": self.lost,
            "retransmissions": {
                "total": self.resent,
                "original_lost_on_path": self.resent_after_loss,
                "original_arrived": self.resent_after_arrival,
            },
        }


@dataclass
class Injected:
    """A segment seen at one point that the other end's point never saw sent."""

    at: int  # index of the capture point that saw it (0: A, 1: B)
    sid: int  # stream id in that capture
    row: int  # row in that capture's table
    partner_sid: int  # the same connection's stream id at the other point
    rst: bool
    answers_lost: bool  # it answers a segment that never reached the other point


@dataclass
class PathPair:
    """What two capture points of one path show together."""

    a: int  # indices of the capture points (groups), A first as given
    b: int
    names: tuple[str, str]
    sids_a: npt.NDArray[np.int64]
    sids_b: npt.NDArray[np.int64]
    a_to_b: Direction
    b_to_a: Direction
    clock_offset_ms: float | None
    only_in_a: int
    only_in_b: int
    a_near_client: int  # paired connections whose client is on A's side
    injected: list[Injected] = field(default_factory=list)
    # per pair index: data segments resent whose earlier copy never reached the other point
    # (column 0) or did (column 1), both directions
    resent: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 2), np.int64))

    def to_json(self) -> dict[str, Any]:
        return {
            "captures": list(self.names),
            "matched_connections": len(self.sids_a),
            "client_side": (
                self.names[0]
                if self.a_near_client * 2 >= len(self.sids_a)
                else self.names[1]
                if len(self.sids_a)
                else None
            ),
            "a_to_b": self.a_to_b.to_json(),
            "b_to_a": self.b_to_a.to_json(),
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "clock_offset_ms": (
                None if self.clock_offset_ms is None else round(self.clock_offset_ms, 3)
            ),
            "clock_note": (
                "the two captures may come from different clocks: B's clock minus A's, "
                "estimated assuming the path is as fast both ways; the delays are measured "
                "relative to it"
            ),
        }


def _near_client(ra: _Rows, rb: _Rows, n: int) -> npt.NDArray[np.bool_]:
    """Per pair: A is nearer the client than B. The handshake's SYN → SYN-ACK gap is longer
    at the point nearer the client (that one waits for the whole way to the server and
    back), whatever the clocks; pairs without a handshake follow the majority."""

    def gap(r: _Rows) -> npt.NDArray[np.float64]:
        kind = r.flags & (SYN | ACK | RST)
        t_syn = np.full(n, np.nan)
        t_sa = np.full(n, np.nan)
        m = (kind == SYN) & (r.side == CLIENT)
        t_syn[r.pid[m][::-1]] = r.ts[m][::-1]
        m = (kind == (SYN | ACK)) & (r.side == SERVER)
        t_sa[r.pid[m][::-1]] = r.ts[m][::-1]
        return t_sa - t_syn

    ga, gb = gap(ra), gap(rb)
    known = ~np.isnan(ga) & ~np.isnan(gb)
    near = np.zeros(n, np.bool_)
    near[known] = ga[known] >= gb[known]
    majority = bool(near[known].sum() * 2 >= known.sum()) if known.any() else True
    near[~known] = majority
    return near


def pair_captures(caps: list[Capture], names: list[str]) -> list[PathPair]:
    """Every pair of capture points that share connections, in the order given."""
    sigs = [signatures(c) for c in caps]
    out = []
    for i in range(len(caps)):
        for j in range(i + 1, len(caps)):
            sa, sb = match_streams(sigs[i], sigs[j])
            if len(sa):
                out.append(measure(caps[i], caps[j], sa, sb, i, j, (names[i], names[j])))
    return out


def _resent(
    r: _Rows,
    sender: npt.NDArray[np.bool_],
    arrived: npt.NDArray[np.bool_],
    per_pair: npt.NDArray[np.int64] | None = None,
) -> tuple[int, int, int]:
    """Data segments of the sending point sent more than once: all copies after the first,
    and how many of those followed a copy that never arrived / that arrived. `per_pair`
    (pairs × 2) gets the same two counts added per connection."""
    m = sender & r.data
    seg, ts, ok, pid = r.seg[m], r.ts[m], arrived[m], r.pid[m]
    order = np.lexsort((ts, seg))
    s, a = seg[order], ok[order]
    again = np.r_[False, s[1:] == s[:-1]] if len(s) else np.zeros(0, np.bool_)
    prev_ok = np.r_[False, a[:-1]] if len(a) else a
    n = int(again.sum())
    after_arrival = int((again & prev_ok).sum())
    if per_pair is not None and n:
        p = pid[order]
        size = len(per_pair)
        per_pair[:, 0] += np.bincount(p[again & ~prev_ok], minlength=size)
        per_pair[:, 1] += np.bincount(p[again & prev_ok], minlength=size)
    return n, n - after_arrival, after_arrival


def measure(
    ca: Capture,
    cb: Capture,
    sa: npt.NDArray[np.int64],
    sb: npt.NDArray[np.int64],
    ia: int,
    ib: int,
    names: tuple[str, str],
) -> PathPair:
    ra, rb = _rows(ca, sa), _rows(cb, sb)
    n = len(sa)
    near = _near_client(ra, rb, n)
    # the endpoint on A's side of each pair: the client where A is nearer the client
    a_side = np.where(near, CLIENT, SERVER)
    from_a_side_a = ra.side == a_side[ra.pid]  # rows at A sent by the endpoint on A's side
    from_a_side_b = rb.side == a_side[rb.pid]
    _, ka, kb = np.intersect1d(ra.key, rb.key, return_indices=True)
    in_b = np.zeros(len(ra.key), np.bool_)
    in_b[ka] = True
    in_a = np.zeros(len(rb.key), np.bool_)
    in_a[kb] = True
    dt = (rb.ts[kb] - ra.ts[ka]).astype(np.float64) / 1e6  # ms, B's clock minus A's
    fwd = from_a_side_a[ka]
    d_ab, d_ba = dt[fwd], -dt[~fwd]
    offset = None
    if len(d_ab) and len(d_ba):
        offset = (float(d_ab.min()) - float(d_ba.min())) / 2
    off = offset or 0.0
    med_ab = float(np.median(d_ab)) - off if len(d_ab) else None
    med_ba = float(np.median(d_ba)) + off if len(d_ba) else None
    # the time both captures cover, in A's clock: a segment counts as missing at the other
    # point only if it should have arrived (or been sent) while that point was capturing
    a_lo, a_hi = ca.start_ns, ca.end_ns
    b_lo, b_hi = cb.start_ns - off * 1e6, cb.end_ns - off * 1e6  # B's range in A's clock
    lo, hi = max(a_lo, b_lo), min(a_hi, b_hi)
    fwd_ns = (med_ab or 0.0) * 1e6
    back_ns = (med_ba or 0.0) * 1e6
    # at A: sent by A's side, expected at B one delay later
    ta = ra.ts.astype(np.float64)
    tb = rb.ts.astype(np.float64) - off * 1e6  # in A's clock
    lost_ab = ~in_b & from_a_side_a & (ta >= lo) & (ta + fwd_ns <= hi)
    lost_ba = ~in_a & ~from_a_side_b & (tb >= lo) & (tb + back_ns <= hi)
    # at A, from B's side, yet B never saw it sent (it should have passed B one delay earlier)
    only_a = ~in_b & ~from_a_side_a & (ta - back_ns >= lo) & (ta <= hi)
    only_b = ~in_a & from_a_side_b & (tb - fwd_ns >= lo) & (tb <= hi)
    injected = _injected(ca, ra, only_a, 0, sb, ~in_b) + _injected(cb, rb, only_b, 1, sa, ~in_a)
    per_pair = np.zeros((n, 2), np.int64)
    ab = Direction(med_ab, int(lost_ab.sum()), *_resent(ra, from_a_side_a, in_b, per_pair))
    ba = Direction(med_ba, int(lost_ba.sum()), *_resent(rb, ~from_a_side_b, in_a, per_pair))
    return PathPair(
        ia,
        ib,
        names,
        sa,
        sb,
        ab,
        ba,
        offset,
        int(only_a.sum()),
        int(only_b.sum()),
        int(near.sum()),
        injected,
        per_pair,
    )


def retransmissions_between(
    k: int, sids: npt.NDArray[np.int64], paths: list[PathPair]
) -> dict[str, int] | None:
    """For connections of capture point `k` (stream ids): their data segments sent again,
    split by what happened to the earlier copy, as both ends show it: never reached the
    other capture point (lost on the path) or reached it (the receiving host dropped it,
    or its acknowledgment was lost). None when none of them is paired."""
    lost = arrived = 0
    paired = False
    for p in paths:
        if k not in (p.a, p.b):
            continue
        mine = p.sids_a if p.a == k else p.sids_b
        hit = np.isin(mine, sids)
        if hit.any():
            paired = True
            lost += int(p.resent[hit, 0].sum())
            arrived += int(p.resent[hit, 1].sum())
    if not paired:
        return None
    return {"total": lost + arrived, "original_lost_on_path": lost, "original_arrived": arrived}


def retransmission_note(facts: dict[str, int], there: str) -> str:
    """One sentence on where resent segments' earlier copies went, for a finding's text."""
    n, lost, got = facts["total"], facts["original_lost_on_path"], facts["original_arrived"]
    if lost == n:
        return (
            f"Both ends captured: the earlier copy of each of the {n} resent segments never "
            f"reached {there}: lost on the path, not dropped by the receiving host."
        )
    if got == n:
        return (
            f"Both ends captured: the earlier copy of each of the {n} resent segments reached "
            f"{there}: the receiving host dropped it (or its acknowledgment was lost on the way "
            "back), not the path."
        )
    return (
        f"Both ends captured: of {n} resent segments, {lost} had an earlier copy lost on the "
        f"path and {got} one that reached {there} (dropped by the receiving host, or its "
        "acknowledgment lost)."
    )


def _injected(
    cap: Capture,
    r: _Rows,
    only: npt.NDArray[np.bool_],
    at: int,
    partner: npt.NDArray[np.int64],
    missing: npt.NDArray[np.bool_],
) -> list[Injected]:
    """The injected segments seen at one point, each with whether the segment it answers
    (the previous row of the connection at that point, from the other side) is one that
    never reached the other point."""
    # each row's previous row of the same connection at that point
    order = np.lexsort((r.rows, r.pid))
    prev = np.full(len(order), -1, np.int64)
    same = r.pid[order][1:] == r.pid[order][:-1] if len(order) else np.zeros(0, np.bool_)
    prev[order[1:][same]] = order[:-1][same]
    out = []
    for k in np.flatnonzero(only):
        row = int(r.rows[k])
        p = int(prev[k])
        answers_lost = p >= 0 and r.side[p] != r.side[k] and bool(missing[p])
        out.append(
            Injected(
                at, int(cap.stream[row]), row, int(partner[r.pid[k]]), bool(r.rst[k]), answers_lost
            )
        )
    return out


@dataclass
class RowMatch:
    """One paired connection's segments at two points, matched (for a two-point ladder)."""

    rows_a: npt.NDArray[np.int64]  # the connection's table rows at A, in capture order
    rows_b: npt.NDArray[np.int64]
    peer_a: npt.NDArray[np.int64]  # per row at A: its index in rows_b, -1 when B never saw it
    peer_b: npt.NDArray[np.int64]
    a_near_client: bool


def match_connection(ca: Capture, cb: Capture, sid_a: int, sid_b: int) -> RowMatch:
    """The segments of one paired connection matched between two points, by the same keys
    `measure` counts with (so a ladder and the path's counts agree)."""
    ra = _rows(ca, np.array([sid_a], np.int64))
    rb = _rows(cb, np.array([sid_b], np.int64))
    _, ka, kb = np.intersect1d(ra.key, rb.key, return_indices=True)
    peer_a = np.full(len(ra.rows), -1, np.int64)
    peer_b = np.full(len(rb.rows), -1, np.int64)
    peer_a[ka] = kb
    peer_b[kb] = ka
    near = bool(_near_client(ra, rb, 1)[0])
    return RowMatch(ra.rows, rb.rows, peer_a, peer_b, near)


def json_lines(paths: list[dict[str, Any]]) -> list[str]:
    """The report's short "path" section, from `PathPair.to_json` entries."""
    lines = []
    for p in paths:
        a, b = (os.path.basename(x) for x in p["captures"])
        lines.append(f"{a} ⇄ {b}: {p['matched_connections']} connections seen at both points")
        for name, d, dst in ((f"{a} → {b}", p["a_to_b"], b), (f"{b} → {a}", p["b_to_a"], a)):
            delay = "?" if d["delay_ms"] is None else f"{d['delay_ms']:.1f} ms"
            text = f"  {name}: one-way delay {delay}, {d['lost']} lost on the path"
            rt = d["retransmissions"]
            if rt["total"]:
                text += (
                    f"; {rt['total']} resent ({rt['original_lost_on_path']} after a loss on the "
                    f"path, {rt['original_arrived']} after the first copy had reached {dst})"
                )
            lines.append(text)
        if p["only_in_a"] or p["only_in_b"]:
            lines.append(
                f"  injected on the path: {p['only_in_a']} seen only at {a}, "
                f"{p['only_in_b']} only at {b}"
            )
        if p["clock_offset_ms"] is not None:
            lines.append(
                f"  clock offset ({b} minus {a}, assuming a symmetric path): "
                f"{p['clock_offset_ms']:+.1f} ms"
            )
    return lines


def attach_retransmissions(
    finding: Any, k: int, sids: npt.NDArray[np.int64], paths: list[PathPair], names: list[str]
) -> None:
    """Give a finding reported at capture point `k` (`tcpwhy.diagnose.model.Finding`) the
    fate of its connections' resent segments' earlier copies, when another point saw them:
    ``facts["retransmissions_between_points"]`` and a sentence after its explanation."""
    facts = retransmissions_between(k, sids, paths)
    if not facts or not facts["total"]:
        return
    finding.facts["retransmissions_between_points"] = facts
    others = [names[p.b if p.a == k else p.a] for p in paths if k in (p.a, p.b)]
    there = others[0] if len(others) == 1 else "the other capture points"
    note = retransmission_note(facts, os.path.basename(there) if len(others) == 1 else there)
    finding.explanation = f"{finding.explanation}\n\n{note}" if finding.explanation else note


@dataclass
class OtherPoint:
    """One connection as another capture point saw it: what a finding made from a pair
    cites from there, beside the rows of the point it is reported at."""

    cap: Capture
    sid: int  # the connection's stream id there
    name: str  # that point's name (its file)
    to_here_ns: float  # added to a time there, gives it in this point's clock
    peer: dict[int, int]  # local row here -> local row there, for the segments seen at both


def other_point(p: PathPair, caps: list[Capture], here: int, sid: int, partner: int) -> OtherPoint:
    """The view from the other point of pair `p` of the connection `sid` of point `here`
    (`partner` its stream id there), matched segment by segment as `measure` matches them."""
    at_a = here == p.a
    there = p.b if at_a else p.a
    m = match_connection(caps[p.a], caps[p.b], *((sid, partner) if at_a else (partner, sid)))
    mine, theirs, peer = (m.rows_a, m.rows_b, m.peer_a) if at_a else (m.rows_b, m.rows_a, m.peer_b)
    local_here = {int(r): i for i, r in enumerate(caps[here].conn(sid).rows.tolist())}
    local_there = {int(r): i for i, r in enumerate(caps[there].conn(partner).rows.tolist())}
    pairs = {
        local_here[int(mine[k])]: local_there[int(theirs[j])]
        for k, j in enumerate(peer.tolist())
        if j >= 0
    }
    off_ns = (p.clock_offset_ms or 0.0) * 1e6  # B's clock minus A's
    return OtherPoint(
        caps[there], partner, p.names[1] if at_a else p.names[0], -off_ns if at_a else off_ns, pairs
    )


def other_point_steps(
    view: OtherPoint, c: Conn, r: int, trig: int | None, what: str, here: str
) -> list[Step]:
    """The other point's evidence about the segment at local row r of `c` (a `Conn` at
    `here`) that it never saw sent, as timeline steps (`model.Step`) of its own capture:
    where the segment r answers (local row `trig`) passed it, and its last packet of the
    connection before r reached `here` (times compared in `here`'s clock)."""
    o = view.cap.conn(view.sid)
    there = os.path.basename(view.name)
    t_here = c.at("ts", r)
    ts = view.cap.table["ts_ns"][o.rows].astype(np.float64) + view.to_here_ns
    before = np.flatnonzero(ts <= t_here)
    last = int(before[-1]) if len(before) else None
    sender = WHO[c.at("side", r)]
    steps = []
    met = view.peer.get(trig, -1) if trig is not None else -1
    if met >= 0:
        steps.append(o.step(met, f"at {there}: the segment the {what} answers passes here"))
    if last is not None and last != met:
        steps.append(
            o.step(
                last,
                f"at {there}: the last packet of this connection before the {what} reached "
                f"{os.path.basename(here)}; the {sender} sends no such {what} here",
            )
        )
    elif last is not None:
        steps[-1].note += f"; the {sender} sends no such {what} here"
    # the other point's rows in this point's timeline: times from this connection's
    # first packet here, in this point's clock (their frame and file are the other point's)
    t0 = c.at("ts", 0)
    for st in steps:
        st.rel_s = round((st.ts_ns + view.to_here_ns - t0) / 1e9, 6)
    return steps


class PairedInstance(Instance):
    """An instance whose timeline ends with the other capture point's own steps."""

    def __init__(
        self,
        conn: Conn,
        rows: list[tuple[int, str]],
        facts: dict[str, Any],
        far: list[Step],
    ) -> None:
        super().__init__(conn, rows, facts)
        self.far = far

    def timeline(self) -> list[Step]:
        return super().timeline() + self.far


def injected_what(c: Conn, r: int) -> str:
    """What the segment at local row r is, in a few words: RST, FIN, data or ACK."""
    f = c.at("flags", r)
    if f & RST:
        return "RST"
    if f & FIN:
        return "FIN"
    if c.at("plen", r) > 0:
        return f"{c.at('plen', r)}-byte data segment"
    return "ACK"
