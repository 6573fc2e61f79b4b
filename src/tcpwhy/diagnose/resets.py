"""Who a RST answers and whether its sender could have, shared by the rules about RSTs."""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.diagnose.context import Conn, fmt_s
from tcpwhy.tcp.seq import seq_add, seq_geq, seq_gt


def trigger(c: Conn, r: int) -> int | None:
    """The peer's segment the RST at row r answers: the peer's last packet before it, if that
    carried data or a FIN and the RST's sequence number is what that segment acknowledged."""
    at = c.at  # a few rows back from r: not the whole lists of a long connection
    x = at("side", r)
    for j in range(r - 1, -1, -1):
        if at("side", j) == x:
            return None
        f = at("flags", j)
        if at("plen", j) > 0 or (f & FIN and not f & RST) or not f & SYN:
            if f & ACK and at("ack", j) == at("seq", r):
                return j
            return None
    return None


def usual_ttl(c: Conn, who: int, skip: int) -> int | None:
    """The TTL most of `who`'s packets other than RSTs and row `skip` came with (the first
    seen among equally common ones), if at least two did."""
    t = c.cap.table
    r = c.rows
    m = (c.cap.side[r] == who) & ((t["flags"][r] & RST) == 0)
    m[skip] = False
    ttls = t["ip_ttl"][r][m]
    if not len(ttls):
        return None
    vals, first, counts = np.unique(ttls, return_index=True, return_counts=True)
    best = np.flatnonzero(counts == counts.max())
    k = best[np.argmin(first[best])]
    return int(vals[k]) if counts[k] >= 2 else None


FASTEST_ANSWER = 0.7
"""A RST from the peer answers a segment at least one round trip (capture point → peer →
capture point) after that segment passed; one that comes back in less than this share of the
shortest round trip the connection showed was made closer than the peer (jitter and a
handshake slowed by the peer's accept path account for the margin)."""

MIN_RTT_S = 0.002
"""Below this round trip (loopback, one switch) the timing tells nothing: the host's own
scheduling varies more than the path."""


def min_rtt_to(c: Conn, who: int, enough: float = 0.0) -> float | None:
    """The shortest round trip from the capture point to `who` and back that the connection
    shows: its handshake, and each new segment of the other side to `who`'s first packet
    acknowledging it (Karn: resent segments are left out, their ACK may answer the first copy).
    The walk stops at the first sample below `enough` (a caller that needs no more: on a
    loopback capture the first sample settles it, and a keep-alive connection has thousands)."""
    best = c.rtt_to(who)
    if best is not None and best < enough:
        return best
    # only the rows the walk acts on: the other side's new data and `who`'s ACKs, without RST
    f = c._np_flags
    side = c._np_side
    t = c.cap.table
    rows = c.rows
    plen = t["payload_len"][rows]
    keep = ((f & RST) == 0) & np.where(side != who, (plen > 0) & ((f & SYN) == 0), (f & ACK) != 0)
    idx = np.flatnonzero(keep)
    if not len(idx):
        return best
    sel = rows[idx]
    mine = (side[idx] == who).tolist()
    ends = seq_add(t["seq"][sel].astype(np.int64), plen[idx]).tolist()
    acks = t["ack"][sel].tolist()
    ts = t["ts_ns"][sel].tolist()
    top: int | None = None  # highest sequence end the other side has sent so far
    pending: list[tuple[int, int]] = []  # (ts, seq end) waiting for `who`'s ACK
    for k in range(len(mine)):
        if not mine[k]:
            end = ends[k]
            if top is not None and not seq_gt(end, top):
                pending.clear()  # a resent segment: no sample until new data
                continue
            top = end
            pending.append((ts[k], end))
        elif pending:
            ack = acks[k]
            done = [p for p in pending if seq_geq(ack, p[1])]
            if done:
                dt = (ts[k] - done[0][0]) / 1e9
                best = dt if best is None else min(best, dt)
                if best < enough:
                    return best
                pending = [p for p in pending if p not in done]
    return best


def too_fast(c: Conn, r: int) -> str:
    """Why the RST at row r cannot come from its sender's kernel ("" if it may): it answers
    a segment sooner after that segment passed the capture point than a round trip to the
    sender takes."""
    trig = trigger(c, r)
    if trig is None:
        return ""
    x = c.at("side", r)
    took = c.dt(trig, r)
    # the handshake's round trip bounds the shortest one from above: when it already says
    # "not too fast" (or "too short to tell"), the walk over every segment is not needed
    hs = c.rtt_to(x)
    if hs is not None and (hs < MIN_RTT_S or took >= FASTEST_ANSWER * hs):
        return ""
    rtt = min_rtt_to(c, x, enough=MIN_RTT_S)  # below it the answer is "" whatever the rest
    if rtt is None or rtt < MIN_RTT_S:
        return ""
    if took >= FASTEST_ANSWER * rtt:
        return ""
    return (
        f"it arrived {fmt_s(took)} after the segment it answers, while a round trip to the "
        f"{'server' if x else 'client'} takes at least {fmt_s(rtt)} here"
    )
