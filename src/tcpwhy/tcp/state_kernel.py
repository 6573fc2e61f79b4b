"""The RFC 9293 state machine of `tcpwhy.tcp.state`, run over many connections in one compiled call.

Why it exists: ``conns`` on a capture of many short connections spent most
of its time calling `run_connection` from Python once per connection. This
module is a hand-written port of `derive_events` (with `_start_states`,
`_resent_after`, `_fin_arrival`) and of `Endpoint` (the 2MSL timer firing,
dated at its deadline, before an event seen at or after it; TIME_WAIT
restarting; the timeline) into one numba kernel that walks every connection
of a batch in one pass. The rules are not written here: the kernel is given
``NEXT[state, event]``, built at import from `TRANSITIONS` and `STAYS` by
`tcpwhy.tcp.state.next_state_table`, so the tables in state.py stay the one
source of truth. tests/test_state_kernel.py holds the two implementations to
the same timelines on every shipped and corpus capture.

Input (CSR layout): the packet columns of all connections, each connection's
rows contiguous and in capture order, ``offsets[c]:offsets[c + 1]`` the rows
of connection ``c`` (ICMP errors among them as `ICMP_ERROR_ROW` rows,
`tcpwhy.tcp.state.with_icmp_rows`); optional ``end_ns`` per connection (when
the capture ended; timers due by then fire) and 2 MSL.

Output (`Timelines`), side 0 the originator and 1 the responder:

=============== ============= =====================================================
field           type          meaning
=============== ============= =====================================================
start           u1 [nconn, 2] state before the first packet (a `State` value)
assumed         b1 [nconn]    the starting states are guesses (no SYN seen); both sides
final           u1 [nconn, 2] state after the last packet (and ``end_ns``)
last            i8 [nconn, 2] index in the flat timeline of the side's last step
unexpected      i8 [nconn, 2] events that fit no rule (`Endpoint.unexpected`, counted)
offsets         i8 [nconn+1]  steps of connection c: ``offsets[c]:offsets[c + 1]``
conn            i8 [nsteps]   connection index of each step
side            u1 [nsteps]   0 originator, 1 responder
state           u1 [nsteps]   state entered
ts_ns           i8 [nsteps]   when (capture time; a timer's deadline for TIMEOUT_2MSL)
frame           u8 [nsteps]   `frame` of the row that caused it; `NO_FRAME` (0) for a timer
event           i1 [nsteps]   `Event` value; -1 for the starting state
=============== ============= =====================================================

Within a connection the steps are in the order `run_connection` takes them:
both starting states (originator first), then each step as its event is
applied, then the timers that ``end_ns`` fires. One side's steps, in order,
are exactly that `Endpoint`'s ``timeline``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, COLUMNS, FIN, RST, SYN
from tcpwhy.native import array_types, kernel, njit
from tcpwhy.tcp.state import (
    ICMP_ERROR_ROW,
    STAY,
    TIME_WAIT_NS,
    UNEXPECTED,
    Event,
    State,
    next_state_table,
)

NEXT = next_state_table()
"""``NEXT[state, event]``: the state entered, `STAY` or `UNEXPECTED` (see state.py)."""

# At most 11 events per packet: a RST gives 2; any other segment at most 2 for a missed
# SYN-ACK, 2 for its SYN / SYN-ACK / ACK of a SYN, 2 for an ACK of a FIN, 2 for data, 2 for
# its FIN and 1 for a pending FIN delivered after it. 16, as state.py allows, leaves room.
MAX_EVENTS_PER_ROW = 16

_U32 = np.int64(0xFFFFFFFF)
_HALF = np.int64(0x80000000)
_NO_DEADLINE = np.iinfo(np.int64).min

# Event and state values as plain ints (compile-time constants in the kernel)
_SEND_SYN = int(Event.SEND_SYN)
_SEND_SYNACK = int(Event.SEND_SYNACK)
_SEND_ACK_OF_SYN = int(Event.SEND_ACK_OF_SYN)
_SEND_ACK_OF_FIN = int(Event.SEND_ACK_OF_FIN)
_SEND_DATA = int(Event.SEND_DATA)
_SEND_FIN = int(Event.SEND_FIN)
_SEND_RST = int(Event.SEND_RST)
_RECV_SYN = int(Event.RECV_SYN)
_RECV_SYNACK = int(Event.RECV_SYNACK)
_RECV_ACK_OF_SYN = int(Event.RECV_ACK_OF_SYN)
_RECV_ACK_OF_FIN = int(Event.RECV_ACK_OF_FIN)
_RECV_DATA = int(Event.RECV_DATA)
_RECV_FIN = int(Event.RECV_FIN)
_RECV_RST = int(Event.RECV_RST)
_TIMEOUT_2MSL = int(Event.TIMEOUT_2MSL)
_RECV_ICMP_ERROR = int(Event.RECV_ICMP_ERROR)
_CLOSED = int(State.CLOSED)
_LISTEN = int(State.LISTEN)
_SYN_SENT = int(State.SYN_SENT)
_SYN_RECEIVED = int(State.SYN_RECEIVED)
_ESTABLISHED = int(State.ESTABLISHED)
_TIME_WAIT = int(State.TIME_WAIT)
_STAY = STAY
_UNEXPECTED = UNEXPECTED

# rows of the per-side scratch `sv` (one column per side): derive_events' locals, and the
# endpoint's 2MSL deadline
_SYN_SEEN, _BARE_SYN, _SYN_END, _SYN_UNACKED = 0, 1, 2, 3
_FIN_END, _FIN_UNACKED, _FIN_DELIVERY, _FIN_AFTER, _DEADLINE = 4, 5, 6, 7, 8
_SV_ROWS = 9
_FIN_NOT_DELIVERED, _FIN_PENDING, _FIN_DELIVERED = 0, 1, 2
_NEVER = -2

# The helpers only index arrays their caller holds, so they are compiled without numba's
# reference counting (`_nrt=False`), as in tcpwhy.tcp.zeek.


@njit(cache=True, inline="always")
def _geq(a: Any, b: Any) -> Any:
    """a >= b in 32-bit sequence space (state._seq_geq), on int64 values."""
    return ((a - b) & _U32) < _HALF


@njit(cache=True, _nrt=False)
def _put(who: Any, evs: Any, rows: Any, k: int, side: int, ev: int, row: int) -> int:
    who[k] = side
    evs[k] = ev
    rows[k] = row
    return k + 1


@njit(cache=True, _nrt=False)
def _resent_after(flags: Any, nxt_other: Any, i: int, bit: int) -> bool:
    """state._resent_after: whether the other side's next segment after row i resends its
    SYN or FIN (so the ACK at row i never reached it)."""
    j = nxt_other[i]
    if j < 0:
        return False
    f = np.int64(flags[j])
    return (f & bit) != 0 and (f & RST) == 0


@njit(cache=True, _nrt=False)
def _fin_arrival(flags: Any, ack: Any, nxt_other: Any, nxt_same: Any, i: int, fin_end: int) -> int:
    """state._fin_arrival over the other side's rows only (chained by `nxt_same`)."""
    last = i
    j = nxt_other[i]
    while j >= 0:
        if np.int64(flags[j]) & ACK:
            if _geq(np.int64(ack[j]), fin_end):
                return last
            last = j
        j = nxt_same[j]
    return i if last == i else _NEVER


@njit(cache=True, _nrt=False)
def _derive(
    direction: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    plen: Any,
    a: int,
    b: int,
    nxt_other: Any,
    nxt_same: Any,
    sv: Any,
    who: Any,
    evs: Any,
    rows: Any,
) -> tuple[int, int, int, bool]:
    """derive_events on rows a..b: writes (who, event, row) and returns (events, originator's
    start state, responder's start state, assumed). Rows are absolute indices."""
    # per row, the next segment of the other side and of the same side (-1: none), so the
    # look-aheads of derive_events cost one step instead of a scan; ICMP error rows look
    # ahead too, but no look-ahead stops at one
    nxt0 = -1
    nxt1 = -1
    for i in range(b - 1, a - 1, -1):
        if np.int64(flags[i]) & ICMP_ERROR_ROW:
            nxt_other[i] = nxt0 if direction[i] != 0 else nxt1
            nxt_same[i] = nxt1 if direction[i] != 0 else nxt0
        elif direction[i] != 0:
            nxt_other[i] = nxt0
            nxt_same[i] = nxt1
            nxt1 = i
        else:
            nxt_other[i] = nxt1
            nxt_same[i] = nxt0
            nxt0 = i
    # _start_states
    s = 1 if direction[a] != 0 else 0
    fl = np.int64(flags[a])
    st_s = _ESTABLISHED
    st_r = _ESTABLISHED
    assumed = True
    if (fl & SYN) != 0 and (fl & (RST | ACK)) == 0:
        assumed = False
        st_s = _CLOSED
        st_r = _LISTEN
        j = nxt_other[a]
        if j >= 0 and (np.int64(flags[j]) & RST) != 0:
            st_r = _CLOSED  # nobody listening
    elif (fl & SYN) != 0 and (fl & ACK) != 0 and (fl & RST) == 0:
        st_s = _SYN_RECEIVED
        st_r = _SYN_SENT
    st0 = st_s if s == 0 else st_r
    st1 = st_r if s == 0 else st_s

    for v in range(_SV_ROWS):
        sv[v, 0] = 0
        sv[v, 1] = 0
    sv[_FIN_AFTER, 0] = -1
    sv[_FIN_AFTER, 1] = -1
    k = 0
    for i in range(a, b):
        s = 1 if direction[i] != 0 else 0
        r = 1 - s
        fl = np.int64(flags[i])
        sq = np.int64(seq[i])
        ak = np.int64(ack[i])
        pl = np.int64(plen[i])
        if fl & ICMP_ERROR_ROW:
            # an error about s's segment; s resending its SYN after it shows it was soft
            if not _resent_after(flags, nxt_same, i, SYN):
                k = _put(who, evs, rows, k, s, _RECV_ICMP_ERROR, i)
            continue
        if fl & RST:
            k = _put(who, evs, rows, k, s, _SEND_RST, i)
            k = _put(who, evs, rows, k, r, _RECV_RST, i)
            continue
        has_ack = (fl & ACK) != 0
        if (fl & SYN) == 0 and (
            (sv[_BARE_SYN, s] != 0 and sv[_SYN_SEEN, r] == 0 and has_ack)
            or (sv[_BARE_SYN, r] != 0 and sv[_SYN_SEEN, s] == 0)
        ):
            # a SYN-ACK the capture missed: its receiver ACKs it, or its sender is talking
            bb = r if sv[_BARE_SYN, s] != 0 else s
            k = _put(who, evs, rows, k, bb, _SEND_SYNACK, i)
            k = _put(who, evs, rows, k, 1 - bb, _RECV_SYNACK, i)
            sv[_SYN_SEEN, bb] = 1
            sv[_SYN_END, bb] = sq if bb == s else ak
            sv[_SYN_UNACKED, bb] = 1
        if fl & SYN:
            if has_ack:
                k = _put(who, evs, rows, k, s, _SEND_SYNACK, i)
                if not _resent_after(flags, nxt_other, i, SYN):
                    k = _put(who, evs, rows, k, r, _RECV_SYNACK, i)
                if sv[_SYN_UNACKED, r] != 0 and _geq(ak, sv[_SYN_END, r]):
                    sv[_SYN_UNACKED, r] = 0  # the SYN-ACK itself acknowledges r's SYN
            else:
                k = _put(who, evs, rows, k, s, _SEND_SYN, i)
                k = _put(who, evs, rows, k, r, _RECV_SYN, i)
                sv[_BARE_SYN, s] = 1
            sv[_SYN_SEEN, s] = 1
            sv[_SYN_END, s] = (sq + 1) & _U32
            sv[_SYN_UNACKED, s] = 1
        elif has_ack and sv[_SYN_UNACKED, r] != 0 and _geq(ak, sv[_SYN_END, r]):
            sv[_SYN_UNACKED, r] = 0
            k = _put(who, evs, rows, k, s, _SEND_ACK_OF_SYN, i)
            if not _resent_after(flags, nxt_other, i, SYN):
                k = _put(who, evs, rows, k, r, _RECV_ACK_OF_SYN, i)
        if has_ack and sv[_FIN_UNACKED, r] != 0 and _geq(ak, sv[_FIN_END, r]):
            sv[_FIN_UNACKED, r] = 0
            k = _put(who, evs, rows, k, s, _SEND_ACK_OF_FIN, i)
            if not _resent_after(flags, nxt_other, i, FIN):
                k = _put(who, evs, rows, k, r, _RECV_ACK_OF_FIN, i)
        if pl:
            k = _put(who, evs, rows, k, s, _SEND_DATA, i)
            k = _put(who, evs, rows, k, r, _RECV_DATA, i)
        if fl & FIN:
            k = _put(who, evs, rows, k, s, _SEND_FIN, i)
            fin_end = (sq + (1 if fl & SYN else 0) + pl + 1) & _U32
            sv[_FIN_END, s] = fin_end
            sv[_FIN_UNACKED, s] = 1
            if sv[_FIN_DELIVERY, s] == _FIN_DELIVERED:
                k = _put(who, evs, rows, k, r, _RECV_FIN, i)  # a retransmission reaching r again
            elif sv[_FIN_DELIVERY, s] == _FIN_NOT_DELIVERED:
                j = _fin_arrival(flags, ack, nxt_other, nxt_same, i, fin_end)
                if j == i:
                    k = _put(who, evs, rows, k, r, _RECV_FIN, i)
                    sv[_FIN_DELIVERY, s] = _FIN_DELIVERED
                elif j > i:
                    sv[_FIN_DELIVERY, s] = _FIN_PENDING
                    sv[_FIN_AFTER, s] = j
        if sv[_FIN_DELIVERY, r] == _FIN_PENDING and sv[_FIN_AFTER, r] == i:
            k = _put(who, evs, rows, k, s, _RECV_FIN, i)
            sv[_FIN_DELIVERY, r] = _FIN_DELIVERED
    return k, st0, st1, assumed


@njit(cache=True, _nrt=False)
def _step(tl: Any, k: int, c: int, side: int, state: int, ts: int, frame: Any, event: int) -> None:
    """Step `k` of the flat timeline `tl` (its conn, side, state, ts, frame, event arrays)."""
    conn_, side_, state_, ts_, frame_, event_ = tl
    conn_[k] = c
    side_[k] = side
    state_[k] = state
    ts_[k] = ts
    frame_[k] = frame
    event_[k] = event


@njit(cache=True, _nrt=False)
def _apply(
    nxt: Any,
    c: int,
    side: int,
    ev: int,
    ts: int,
    frame: Any,
    time_wait_ns: int,
    ep: Any,
    tl: Any,
    k: int,
) -> int:
    """Endpoint._apply: one event through NEXT; returns the steps written so far. `ep`: the
    scratch values and the per-connection arrays (sv, final, last, unexpected)."""
    sv, final, last, unexp = ep
    new = np.int64(nxt[np.int64(final[c, side]), ev])
    if new == _UNEXPECTED:
        unexp[c, side] += 1
        return k
    if new == _STAY:
        return k
    final[c, side] = new
    sv[_DEADLINE, side] = ts + time_wait_ns if new == _TIME_WAIT else _NO_DEADLINE
    _step(tl, k, c, side, new, ts, frame, ev)
    last[c, side] = k
    return k + 1


@njit(cache=True, _nrt=False)
def _advance(
    nxt: Any, c: int, side: int, now: int, time_wait_ns: int, ep: Any, tl: Any, k: int
) -> int:
    """Endpoint.advance: the 2MSL timer fires, dated at its deadline, if it is due by `now`."""
    deadline = ep[0][_DEADLINE, side]
    if deadline != _NO_DEADLINE and now >= deadline:
        k = _apply(nxt, c, side, _TIMEOUT_2MSL, deadline, 0, time_wait_ns, ep, tl, k)
    return k


@kernel(
    f"i1[:,:] u1[:] {array_types(COLUMNS, ('flags', 'seq', 'ack', 'payload_len', 'ts_ns', 'frame'))} "
    "i8[:] i8[:] i8 i8 i8 i8[:] i8[:] i8[:,:] u1[:] u1[:] i8[:] u1[:,:] b1[:] u1[:,:] i8[:,:] "
    "i8[:,:] i8[:] i8[:] u1[:] u1[:] i8[:] u8[:] i1[:] -> (i8, i8)",
    nogil=True,
)
def run_many(
    nxt: Any,
    # packets, connection by connection (CSR)
    direction: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    plen: Any,
    ts: Any,
    frame: Any,
    offsets: Any,
    end_ns: Any,
    time_wait_ns: int,
    # where to resume
    first: int,
    k: int,
    # scratch: per row, per event of one connection, per side
    nxt_other: Any,
    nxt_same: Any,
    sv: Any,
    ev_who: Any,
    ev_ev: Any,
    ev_row: Any,
    # per connection and side
    start: Any,
    assumed: Any,
    final: Any,
    last: Any,
    unexp: Any,
    # the flat timeline
    tl_off: Any,
    tl_conn: Any,
    tl_side: Any,
    tl_state: Any,
    tl_ts: Any,
    tl_frame: Any,
    tl_event: Any,
) -> tuple[int, int]:
    """run_connection on connections `first`.. of a batch, their steps written from `k` on.

    Hand-written for speed: one compiled pass per batch instead of a Python call per
    connection. Returns (connections done, steps written); it stops before a connection
    whose steps might not fit (at most 2 + 2 x its events), for the caller to grow the
    timeline and call again from there.
    """
    nconn = offsets.shape[0] - 1
    cap = tl_conn.shape[0]
    ep = (sv, final, last, unexp)
    tl = (tl_conn, tl_side, tl_state, tl_ts, tl_frame, tl_event)
    for c in range(first, nconn):
        a = offsets[c]
        b = offsets[c + 1]
        tl_off[c] = k
        if b <= a:
            # no packets: as run_connection, both CLOSED from time 0
            if k + 2 > cap:
                return c, k
            ne = 0
            st0 = _CLOSED
            st1 = _CLOSED
            assumed[c] = False
            t0 = np.int64(0)
            f0 = np.uint64(0)
        else:
            ne, st0, st1, asm = _derive(
                direction, flags, seq, ack, plen, a, b, nxt_other, nxt_same, sv,
                ev_who, ev_ev, ev_row,
            )  # fmt: skip
            # each event adds at most one step, and a timer step needs a TIME_WAIT step first
            if k + 2 + 2 * ne > cap:
                return c, k
            assumed[c] = asm
            t0 = ts[a]
            f0 = frame[a]
        for sd in range(2):
            st = st0 if sd == 0 else st1
            start[c, sd] = st
            final[c, sd] = st
            unexp[c, sd] = 0
            sv[_DEADLINE, sd] = t0 + time_wait_ns if st == _TIME_WAIT else _NO_DEADLINE
            _step(tl, k, c, sd, st, t0, f0, -1)
            last[c, sd] = k
            k += 1
        for e in range(ne):
            side = np.int64(ev_who[e])
            ev = np.int64(ev_ev[e])
            row = ev_row[e]
            # Endpoint.handle: a timer due by this event's time fires first
            if ev != _TIMEOUT_2MSL:
                k = _advance(nxt, c, side, ts[row], time_wait_ns, ep, tl, k)
            k = _apply(nxt, c, side, ev, ts[row], frame[row], time_wait_ns, ep, tl, k)
        if end_ns[c] >= 0:
            for sd in range(2):
                k = _advance(nxt, c, sd, end_ns[c], time_wait_ns, ep, tl, k)
    tl_off[nconn] = k
    return nconn, k


class Timelines(NamedTuple):
    """Both endpoints of many connections (schema in the module docstring)."""

    start: npt.NDArray[np.uint8]
    assumed: npt.NDArray[np.bool_]
    final: npt.NDArray[np.uint8]
    last: npt.NDArray[np.int64]
    unexpected: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    conn: npt.NDArray[np.int64]
    side: npt.NDArray[np.uint8]
    state: npt.NDArray[np.uint8]
    ts_ns: npt.NDArray[np.int64]
    frame: npt.NDArray[np.uint64]
    event: npt.NDArray[np.int8]


def _col(a: npt.ArrayLike, dt: type) -> npt.NDArray[Any]:
    """`a` as a C-contiguous writable array of `dt` (the kernel's exact signature), copied
    only if it is not one already."""
    out: npt.NDArray[Any] = np.ascontiguousarray(a, dtype=dt)
    if not out.flags.writeable:
        out = out.copy()
    return out


def run_connections(
    direction: npt.ArrayLike,
    flags: npt.ArrayLike,
    seq: npt.ArrayLike,
    ack: npt.ArrayLike,
    payload_len: npt.ArrayLike,
    ts_ns: npt.ArrayLike,
    frame: npt.ArrayLike,
    offsets: npt.ArrayLike,
    *,
    end_ns: int | npt.ArrayLike | None = None,
    time_wait_ns: int = TIME_WAIT_NS,
    steps_hint: int | None = None,
) -> Timelines:
    """`run_connection` on every connection of a batch in one compiled call.

    Rows ``offsets[c]:offsets[c + 1]`` of the packet columns are connection
    ``c``, in capture order; `direction` is 0 for originator → responder.
    `end_ns` (one value for all, or one per connection; negative or None:
    none) is when the capture ended, as in `run_connection`. `steps_hint`
    sizes the timeline buffer (it grows when short; tests use it).
    """
    off = _col(offsets, np.int64)
    nconn = len(off) - 1
    if nconn < 0:
        raise ValueError("offsets needs at least one entry")
    cols = (
        _col(direction, np.uint8),
        _col(flags, np.uint16),
        _col(seq, np.uint32),
        _col(ack, np.uint32),
        _col(payload_len, np.uint32),
        _col(ts_ns, np.int64),
        _col(frame, np.uint64),
    )
    nrows = len(cols[0])
    if any(len(c) != nrows for c in cols) or (nconn and (off[0] != 0 or off[-1] != nrows)):
        raise ValueError("packet columns and offsets disagree")
    if np.any(np.diff(off) < 0):
        raise ValueError("offsets must not decrease")
    if end_ns is None:
        ends = np.full(nconn, -1, np.int64)
    else:
        ends = _col(np.broadcast_to(np.asarray(end_ns, np.int64), (nconn,)), np.int64)
    longest = int(np.diff(off).max()) if nconn else 0
    ev_cap = MAX_EVENTS_PER_ROW * longest
    scratch = (
        np.empty(nrows, np.int64),
        np.empty(nrows, np.int64),
        np.zeros((_SV_ROWS, 2), np.int64),
        np.empty(ev_cap, np.uint8),
        np.empty(ev_cap, np.uint8),
        np.empty(ev_cap, np.int64),
    )
    per_conn = (
        np.empty((nconn, 2), np.uint8),
        np.empty(nconn, np.bool_),
        np.empty((nconn, 2), np.uint8),
        np.empty((nconn, 2), np.int64),
        np.empty((nconn, 2), np.int64),
    )
    tl_off = np.empty(nconn + 1, np.int64)
    tl_off[0] = 0
    cap = steps_hint if steps_hint is not None else 2 * nconn + 3 * nrows
    tl = _timeline(max(cap, 2))
    done = k = 0
    while True:
        done, k = run_many(
            NEXT, *cols, off, ends, int(time_wait_ns), done, k, *scratch, *per_conn, tl_off, *tl
        )
        if done >= nconn:
            break
        # the next connection might not fit: grow to its worst case at least
        m = int(off[done + 1] - off[done])
        need = k + 2 + 2 * MAX_EVENTS_PER_ROW * m
        bigger = _timeline(max(2 * len(tl[0]), need))
        for new, old in zip(bigger, tl, strict=True):
            new[:k] = old[:k]
        tl = bigger
    return Timelines(*per_conn, tl_off, *(c[:k] for c in tl))


def _timeline(n: int) -> tuple[npt.NDArray[Any], ...]:
    return (
        np.empty(n, np.int64),
        np.empty(n, np.uint8),
        np.empty(n, np.uint8),
        np.empty(n, np.int64),
        np.empty(n, np.uint64),
        np.empty(n, np.int8),
    )


__all__ = ["MAX_EVENTS_PER_ROW", "NEXT", "Timelines", "run_connections", "run_many"]
