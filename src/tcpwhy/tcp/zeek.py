"""Zeek's view of a TCP connection: endpoint states, `conn_state`, `history`, counters.

This is a port of the per-packet logic of Zeek's TCP session adapter
(``TCPSessionAdapter::Process`` and its ``Update*State`` helpers), of its
session timers, and of ``conn_state()`` in ``base/protocols/conn/main.zeek``,
so that a record here reads like the conn.log line Zeek would have written.
The per-packet pass is sequential (history letters depend on order), so it
is compiled with numba and keeps its state in plain integer arrays, a row of
each per active connection ("slot"), which carry over from chunk to chunk.

Endpoints are indexed by the packet table's canonical direction (0/1), not
by originator/responder; ``F_ODIR`` says which one originates. Flipping the
roles (Zeek's ``^``) is then a single assignment.

Content gaps (history ``G``/``g``, ``missed_bytes``) follow Zeek's reassembler
(``TCP_Reassembler``: ``DataSent``, ``AckReceived``, ``Undelivered``, ``Gap``)
without its payload: per endpoint the point delivered up to and a few blocks
above a hole. What is left out of Zeek: application analyzers (``service``,
``X``) and weirds. See docs/conns.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.decode.table import ACK, COLUMNS, FIN, RST, SYN
from tcpwhy.native import array_types, kernel, njit, tuple_of

# --- Zeek endpoint states (TCP_ENDPOINT_*), in Zeek's own numbering -------------------
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
ZEEK_STATE_NAMES = (
    "INACTIVE",
    "SYN_SENT",
    "SYN_ACK_SENT",
    "PARTIAL",
    "ESTABLISHED",
    "CLOSED",
    "RESET",
)

# --- history bit masks (Zeek's HIST_*); the responder's are shifted left by 16 ----------
H_SYN, H_FIN, H_RST, H_FIN_RST, H_DATA, H_ACK, H_MULTI = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40

# --- Zeek's default timer settings (init-bare.zeek), in nanoseconds ---------------------
SEC = 1_000_000_000
TCP_SYN_TIMEOUT = 5 * SEC
TCP_SESSION_TIMER = 6 * SEC
TCP_CONNECTION_LINGER = 5 * SEC
TCP_ATTEMPT_DELAY = 5 * SEC
TCP_CLOSE_DELAY = 5 * SEC
TCP_PARTIAL_CLOSE_DELAY = 3 * SEC
TCP_RESET_DELAY = 5 * SEC
TCP_INACTIVITY_TIMEOUT = 300 * SEC
UDP_INACTIVITY_TIMEOUT = 60 * SEC  # what Zeek arms for a TCP connection until its handshake ends
NEVER = np.iinfo(np.int64).max

TOO_LARGE_SEQ_DELTA = 1048576

HIST_MAX = 48
"""History letters kept per connection; longer histories end in '+' (Zeek's are unbounded)."""

# --- slot layout: per active connection ("slot") a row of S (int64) and one of W (int32) ----
# S holds what needs 64 bits: times in ns, uids and indices, addresses, sequence numbers and
# byte counts; W the rest: states, flags, letters' counters and thresholds, small counts.
# Each field is declared once, below: its column is its place in the declaration order (the
# kernels rely on that order where they step from a field to its neighbours: A0HI..A1LO,
# P0/P1, CLOSE1..CLOSE3, B0LO..B2HI), and each row's width is the number of fields declared.


class _Columns:
    """Hands out consecutive column numbers: `take()` the next one; `n` is how many so far."""

    def __init__(self) -> None:
        self.n = 0

    def take(self) -> int:
        self.n += 1
        return self.n - 1


_S = _Columns()  # per connection, in S
F_UID = _S.take()
F_STREAM = _S.take()
F_CONV = _S.take()
F_START_TS = _S.take()
F_LAST_TS = _S.take()  # Zeek's LastTime: not advanced once both sides closed
F_SEEN_TS = _S.take()  # any packet, for idling and eviction
F_INACT = _S.take()  # inactivity timeout in force
F_T_ATTEMPT = _S.take()
F_T_DELETE = _S.take()
F_T_EXPIRE = _S.take()
F_T_PARTIAL = _S.take()
F_T_RESET = _S.take()
F_SYN_TS = _S.take()
F_SYNACK_TS = _S.take()
F_HSACK_TS = _S.take()
F_A0HI = _S.take()  # address of the endpoint that sends direction 0
F_A0LO = _S.take()
F_A1HI = _S.take()
F_A1LO = _S.take()
F_MISSED = _S.take()  # content gap bytes (Zeek's missed_bytes)
F_AS_OF = _S.take()  # capture time the record was written at (`_emit`): its words are as of it
EP0 = _S.n
"""Column of endpoint 0's first field in S (`_ep`)."""

_W = _Columns()  # per connection, in W
F_ACTIVE = _W.take()
F_ODIR = _W.take()  # canonical direction of the originator
F_ORIENT = _W.take()  # ORIENT_* how the originator was chosen
F_HIST_SEEN = _W.take()
F_HLEN = _W.take()
F_IS_ACTIVE = _W.take()  # Zeek's is_active (timers stop caring once it is 0)
F_CONTINUED = _W.take()
F_FIRST_FLAGS = _W.take()
F_CLOSE1 = _W.take()  # first closing event: 1 + (dir*4 + kind), kind 0 FIN, 1 RST
F_CLOSE2 = _W.take()
F_CLOSE3 = _W.take()
F_REASON = _W.take()  # END_* why the record was emitted
F_P0 = _W.take()  # port of the endpoint that sends direction 0
F_P1 = _W.take()
F_FIRST_SEEN = _W.take()  # bit 1 + dir: a packet of that direction got past the checksum
# Zeek's is_partial: the connection did not start with a SYN from each side
F_IS_PARTIAL = _W.take()
WP0 = _W.n
"""Column of endpoint 0's first field in W (`_ew`)."""

_SE = _Columns()  # per endpoint, in S from `_ep(d)`
E_START = _SE.take()  # raw 32-bit start sequence number
E_LAST = _SE.take()  # last sequence number, relative to START, 64-bit
E_ACKR = _SE.take()  # highest ack received from the peer, relative to START
E_HL_SYN = _SE.take()
E_HL_FIN = _SE.take()
E_HL_RST = _SE.take()
E_PKTS = _SE.take()
E_IPBYTES = _SE.take()
E_PAYLOAD = _SE.take()
E_FIN_END = _SE.take()  # raw seq just past my last FIN, for picking the ACKs that matter to states
E_FIN_REL = _SE.take()  # Zeek's FIN_seq: relative seq just past my last FIN
# Zeek's reassembler, for content gaps: relative seq delivered up to, trimmed up to,
# and up to three blocks of data received above a hole ([lo, hi), hi 0 if unused)
E_LR = _SE.take()
E_TRIM = _SE.take()
E_B0LO = _SE.take()
E_B0HI = _SE.take()
E_B1LO = _SE.take()
E_B1HI = _SE.take()
E_B2LO = _SE.take()
E_B2HI = _SE.take()
EPN = _SE.n
"""Fields of one endpoint in S."""

_WE = _Columns()  # per endpoint, in W from `_ew(d)`
E_STATE = _WE.take()
E_PREV = _WE.take()
E_FIN_CNT = _WE.take()
E_DID_CLOSE = _WE.take()
E_RX_CNT = _WE.take()
E_RX_TH = _WE.take()
E_W0_CNT = _WE.take()
E_W0_TH = _WE.take()
E_CK_CNT = _WE.take()
E_CK_TH = _WE.take()
E_RETX = _WE.take()
E_ZWIN = _WE.take()
E_FIN_ACKED = _WE.take()  # bit 1: an ACK of my FIN was kept; bit 2: a later non-acknowledging one
E_FIRST_KEPT = _WE.take()  # non-control packets kept at the start (for the handshake's ACK)
E_G_CNT = _WE.take()
E_G_TH = _WE.take()
WPN = _WE.n
"""Fields of one endpoint in W."""

NFIELDS = EP0 + 2 * EPN
"""Width of S."""
NFIELDS32 = WP0 + 2 * WPN
"""Width of W."""

# --- parked connections: one pure SYN, kept as its packet, not as a slot's state --------
# On a SYN flood half a million connections are open at once, each one SYN that will never
# see a second packet; a slot's state (S, W and H: 728 bytes) for each costs more memory
# than anything else `conns` holds, and the time of the kernel clearing those pages. Like the
# kernel's request socks, such a connection keeps its slot number (the pool's count and the
# eviction order are unchanged) but its state stays the packet that started it: a row of P,
# 104 bytes. Whatever needs its state (a second packet, its timers, eviction, the capture's
# end) replays that packet into a slot with the code that ran it first (`_unpark`), so the
# record is the one the slot would have held.
_P = _Columns()  # per parked slot, in P
P_UID = _P.take()
P_STREAM = _P.take()
P_CONV = _P.take()
P_TS = _P.take()
P_SEQ = _P.take()
P_ACK = _P.take()
P_SRC_HI = _P.take()
P_SRC_LO = _P.take()
P_DST_HI = _P.take()
P_DST_LO = _P.take()
P_PORTS = _P.take()  # sport << 32 | dport << 16 | window
P_LENS = _P.take()  # payload length << 32 | IP length
# flags | dir << 16 | continued << 17 | truncated << 18, then as signed bytes the checksum
# result << 24 and the external retransmission and zero-window flags << 32 and << 40,
# whether the connection counts as finished for idling (`_finished`) << 48, and whether the
# packet is one the RFC state machine is given (`_packet`'s answer) << 49
P_BITS = _P.take()
P_FRAME = _P.take()
NPARK = _P.n
"""Width of P."""

# --- a parked connection's packet for the RFC state machine ------------------------------
# The packets the RFC state machine is given are kept by the caller until the connection's
# record is written (`row_keep`). A parked connection's one packet is in P already: it is
# not kept twice (on a flood, half a million rows beside P's), but handed over as a row of
# LK when the connection stops being parked -- its second packet, or its record written
# from the scratch slot -- in the caller's order, before the rows of the call that follow it.
KEPT_FIELDS = ("uid", "dir", "flags", "seq", "ack", "plen", "ts", "frame")
"""The columns of a kept packet, in LK and in the caller's kept packets alike."""
LK_UID, LK_DIR, LK_FLAGS, LK_SEQ, LK_ACK, LK_PLEN, LK_TS, LK_FRAME = range(len(KEPT_FIELDS))
NKEPT = len(KEPT_FIELDS)
"""Width of LK."""
PARKED_AS = {
    F_UID: P_UID,
    F_STREAM: P_STREAM,
    F_CONV: P_CONV,
    F_START_TS: P_TS,
    F_SEEN_TS: P_TS,
}
"""The slot fields a parked connection has in P, and where (its start is its last packet)."""

# how the originator was chosen
ORIENT_SYN, ORIENT_FIRST, ORIENT_PORT, ORIENT_SYNACK, ORIENT_REVERSAL = range(5)
ORIENT_WORDS = (
    "syn",
    "heuristic: sender of the first packet (no SYN seen)",
    "heuristic: likely server port",
    "heuristic: a lone SYN-ACK came from the responder",
    "heuristic: SYN and SYN-ACK seen in reverse order",
)

# why a record was emitted
(
    END_CAPTURE,
    END_CLOSE_DELAY,
    END_ATTEMPT,
    END_EXPIRE,
    END_PARTIAL_CLOSE,
    END_RESET_DELAY,
    END_INACTIVITY,
    END_REUSE,
    END_PORT_REUSE,
    END_EVICTED,
    END_IDLE,
) = range(11)
END_WORDS = (
    "end of capture",
    "closed (Zeek's close delay passed)",
    "connection attempt timed out",
    "expired",
    "partial close timed out",
    "reset (Zeek's reset delay passed)",
    "inactivity timeout",
    "Zeek saw the 4-tuple reused",
    "port reused (new SYN)",
    "evicted: too many active connections",
    "idle",
)

_M32 = np.int64(0xFFFFFFFF)

# The helpers that take the state arrays are compiled without numba's reference counting
# (`_nrt=False`, as numba does for its own string helpers): they only index arrays their
# caller holds. Inlined into process_chunk (inline="always") they would bring an atomic
# increment and decrement of S and H per call, two thirds of the per-packet time; as
# plain calls LLVM still inlines the small ones.


@njit(cache=True, inline="always")
def _sdelta(a: Any, b: Any) -> Any:
    """a - b in 32-bit sequence space, as a signed value (Zeek's seq_delta)."""
    d = (np.int64(a) - np.int64(b)) & _M32
    if d >= 0x80000000:
        d -= 0x100000000
    return d


@njit(cache=True, inline="always")
def _ep(d: Any) -> Any:
    """The first column of endpoint d's fields in S."""
    return EP0 + d * EPN


@njit(cache=True, inline="always")
def _ew(d: Any) -> Any:
    """The first column of endpoint d's fields in W."""
    return WP0 + d * WPN


@njit(cache=True, _nrt=False)
def _add_hist(S: Any, W: Any, H: Any, s: Any, code: Any) -> None:
    n = W[s, F_HLEN]
    if n < HIST_MAX - 1:
        H[s, n] = code
        W[s, F_HLEN] = n + 1
    elif n == HIST_MAX - 1:
        H[s, n] = 43  # '+'
        W[s, F_HLEN] = n + 1


@njit(cache=True, _nrt=False)
def _check_hist(S: Any, W: Any, H: Any, s: Any, d: Any, mask: Any, code: Any) -> bool:
    """Zeek's CheckHistory: add the letter the first time; True if it was seen before."""
    if d != W[s, F_ODIR]:
        mask = mask << 16
        code = code + 32  # lower case
    if W[s, F_HIST_SEEN] & mask:
        return True
    W[s, F_HIST_SEEN] |= mask
    _add_hist(S, W, H, s, code)
    return False


@njit(cache=True, _nrt=False)
def _letter(S: Any, W: Any, H: Any, s: Any, d: Any, code: Any) -> None:
    if d != W[s, F_ODIR]:
        code = code + 32
    _add_hist(S, W, H, s, code)


@njit(cache=True, _nrt=False)
def _scaled(S: Any, W: Any, H: Any, s: Any, d: Any, cnt: Any, th: Any, code: Any) -> None:
    """Zeek's ScaledHistoryEntry: a letter on the 1st, 10th, 100th ... occurrence."""
    ew = _ew(d)
    W[s, ew + cnt] += 1
    if W[s, ew + cnt] == W[s, ew + th]:
        _letter(S, W, H, s, d, code)
        W[s, ew + th] *= 10


@njit(cache=True, inline="always")
def _is_handshake(st: Any) -> bool:
    return st in (INACTIVE, SYN_SENT, SYN_ACK_SENT)


@njit(cache=True, _nrt=False)
def _set_state(S: Any, W: Any, s: Any, d: Any, new: Any) -> None:
    ew = _ew(d)
    pw = _ew(1 - d)
    old = W[s, ew + E_STATE]
    if new != old:
        if not _is_handshake(new) and _is_handshake(old) and _is_handshake(W[s, pw + E_STATE]):
            S[s, F_INACT] = TCP_INACTIVITY_TIMEOUT
        W[s, ew + E_PREV] = old
        W[s, ew + E_STATE] = new


@njit(cache=True, _nrt=False)
def _init_seq(S: Any, W: Any, s: Any, d: Any, start: Any, last: Any) -> None:
    e = _ep(d)
    S[s, e + E_START] = start & _M32
    S[s, e + E_ACKR] = 0
    S[s, e + E_LAST] = _sdelta(last, start)


@njit(cache=True, _nrt=False)
def _raw(S: Any, W: Any, s: Any, d: Any, rel: Any) -> Any:
    return (S[s, _ep(d) + E_START] + rel) & _M32


@njit(cache=True, _nrt=False)
def _flip(S: Any, W: Any, H: Any, s: Any) -> None:
    W[s, F_ODIR] = 1 - W[s, F_ODIR]
    _add_hist(S, W, H, s, 94)  # '^'


@njit(cache=True, _nrt=False)
def _close(S: Any, W: Any, s: Any, d: Any) -> None:
    """Zeek's ConnectionClosed for endpoint d: arms the timers that will remove the connection."""
    ew = _ew(d)
    pw = _ew(1 - d)
    if W[s, ew + E_DID_CLOSE]:
        return
    W[s, ew + E_DID_CLOSE] = 1
    complete = (
        W[s, ew + E_STATE] == RESET or W[s, pw + E_DID_CLOSE] or W[s, pw + E_STATE] == INACTIVE
    )
    if complete:
        if W[s, ew + E_PREV] != INACTIVE or W[s, pw + E_STATE] != INACTIVE:
            W[s, F_IS_ACTIVE] = 0  # ConnectionFinished
        # CancelTimers(): the analyzer's timers go, the session's inactivity timer stays
        S[s, F_T_ATTEMPT] = NEVER
        S[s, F_T_EXPIRE] = NEVER
        S[s, F_T_PARTIAL] = NEVER
        S[s, F_T_RESET] = NEVER
        S[s, F_T_DELETE] = min(S[s, F_T_DELETE], S[s, F_LAST_TS] + TCP_CLOSE_DELAY)
    elif W[s, ew + E_PREV] == INACTIVE:
        S[s, F_T_PARTIAL] = min(S[s, F_T_PARTIAL], S[s, F_LAST_TS] + TCP_PARTIAL_CLOSE_DELAY)
    else:
        S[s, F_T_EXPIRE] = min(S[s, F_T_EXPIRE], S[s, F_LAST_TS] + TCP_SESSION_TIMER)


@njit(cache=True, _nrt=False)
def _note_close(S: Any, W: Any, s: Any, d: Any, kind: Any) -> None:
    """Remember the order of the first FIN and RST of each side, for wording the end."""
    code = 1 + d * 4 + kind
    for f in (F_CLOSE1, F_CLOSE2, F_CLOSE3):
        if W[s, f] == code:
            return
        if W[s, f] == 0:
            W[s, f] = code
            return


@njit(cache=True, inline="always")
def _is_clean(W: Any, s: Any, d: Any) -> bool:
    st = W[s, _ew(d) + E_STATE]
    return st == ESTABLISHED or (st == CLOSED and W[s, _ew(d) + E_PREV] == ESTABLISHED)


@njit(cache=True, _nrt=False)
def _gap(S: Any, W: Any, H: Any, s: Any, d: Any, n: Any) -> None:
    """Zeek's TCP_Reassembler::Gap: counted (G/g, missed_bytes) only while both sides are
    established or closing cleanly."""
    if _is_clean(W, s, d) and _is_clean(W, s, 1 - d):
        _scaled(S, W, H, s, d, E_G_CNT, E_G_TH, 71)  # 'G'
        S[s, F_MISSED] += n


@njit(cache=True, _nrt=False)
def _deliver_blocks(S: Any, W: Any, s: Any, e: Any) -> None:
    """Blocks now reached by the delivered point join it (kept sorted, unused ones last)."""
    while S[s, e + E_B0HI] != 0 and S[s, e + E_B0LO] <= S[s, e + E_LR]:
        if S[s, e + E_B0HI] > S[s, e + E_LR]:
            S[s, e + E_LR] = S[s, e + E_B0HI]
        S[s, e + E_B0LO] = S[s, e + E_B1LO]
        S[s, e + E_B0HI] = S[s, e + E_B1HI]
        S[s, e + E_B1LO] = S[s, e + E_B2LO]
        S[s, e + E_B1HI] = S[s, e + E_B2HI]
        S[s, e + E_B2LO] = 0
        S[s, e + E_B2HI] = 0


@njit(cache=True, _nrt=False)
def _add_block(S: Any, W: Any, s: Any, e: Any, lo: Any, hi: Any) -> None:
    """Data above the delivered point: merged into the (at most three, sorted, disjoint)
    blocks waiting. A fourth disjoint block is merged with its nearest neighbour (the hole
    between them is then taken as filled, where Zeek keeps every block)."""
    # absorb the blocks it overlaps or touches
    for k in range(3):
        blo = S[s, e + E_B0LO + 2 * k]
        bhi = S[s, e + E_B0HI + 2 * k]
        if bhi != 0 and blo <= hi and lo <= bhi:
            lo = min(lo, blo)
            hi = max(hi, bhi)
            S[s, e + E_B0LO + 2 * k] = 0
            S[s, e + E_B0HI + 2 * k] = 0
    # compact the rest, then insert in order (insertion sort over four slots)
    n = 0
    for k in range(3):
        blo = S[s, e + E_B0LO + 2 * k]
        bhi = S[s, e + E_B0HI + 2 * k]
        if bhi != 0:
            S[s, e + E_B0LO + 2 * n] = blo
            S[s, e + E_B0HI + 2 * n] = bhi
            n += 1
    for k in range(n, 3):
        S[s, e + E_B0LO + 2 * k] = 0
        S[s, e + E_B0HI + 2 * k] = 0
    if n == 3:
        # merge the closest pair among the three and the new one
        l0, h0 = S[s, e + E_B0LO], S[s, e + E_B0HI]
        l1, h1 = S[s, e + E_B1LO], S[s, e + E_B1HI]
        l2, h2 = S[s, e + E_B2LO], S[s, e + E_B2HI]
        if lo < l0:
            l0, h0, l1, h1, l2, h2, lo, hi = lo, hi, l0, h0, l1, h1, l2, h2
        elif lo < l1:
            l1, h1, l2, h2, lo, hi = lo, hi, l1, h1, l2, h2
        elif lo < l2:
            l2, h2, lo, hi = lo, hi, l2, h2
        # four sorted blocks l0 < l1 < l2 < lo: join the pair with the smallest hole
        g0, g1, g2 = l1 - h0, l2 - h1, lo - h2
        if g0 <= g1 and g0 <= g2:
            h0, l1, h1, l2, h2 = h1, l2, h2, lo, hi
        elif g1 <= g2:
            h1, l2, h2 = h2, lo, hi
        else:
            h2 = hi
        S[s, e + E_B0LO], S[s, e + E_B0HI] = l0, h0
        S[s, e + E_B1LO], S[s, e + E_B1HI] = l1, h1
        S[s, e + E_B2LO], S[s, e + E_B2HI] = l2, h2
        return
    k = n
    while k > 0 and S[s, e + E_B0LO + 2 * (k - 1)] > lo:
        S[s, e + E_B0LO + 2 * k] = S[s, e + E_B0LO + 2 * (k - 1)]
        S[s, e + E_B0HI + 2 * k] = S[s, e + E_B0HI + 2 * (k - 1)]
        k -= 1
    S[s, e + E_B0LO + 2 * k] = lo
    S[s, e + E_B0HI + 2 * k] = hi


@njit(cache=True, _nrt=False)
def _data_sent(S: Any, W: Any, s: Any, d: Any, seq: Any, n: Any) -> None:
    """Zeek's TCP_Reassembler::DataSent for payload [seq, seq + n) (relative) of endpoint d."""
    e = _ep(d)
    upper = seq + n
    ack = S[s, e + E_ACKR]
    if seq < ack:
        if upper <= ack:
            return
        seq = ack
    if upper <= S[s, e + E_TRIM]:
        return
    if seq < S[s, e + E_TRIM]:
        seq = S[s, e + E_TRIM]
    if seq <= S[s, e + E_LR]:
        if upper > S[s, e + E_LR]:
            S[s, e + E_LR] = upper
            _deliver_blocks(S, W, s, e)
    else:
        _add_block(S, W, s, e, seq, upper)


@njit(cache=True, _nrt=False)
def _ack_received(S: Any, W: Any, H: Any, s: Any, d: Any, seq: Any) -> None:
    """Zeek's TCP_Reassembler::AckReceived on endpoint d's data: what the peer acknowledges
    beyond what was delivered is a content gap (up to the FIN)."""
    e = _ep(d)
    if W[s, _ew(d) + E_FIN_CNT] > 0 and seq >= S[s, e + E_FIN_REL]:
        seq = S[s, e + E_FIN_REL] - 1
    if seq <= S[s, e + E_TRIM]:
        return
    S[s, e + E_TRIM] = seq
    if seq <= S[s, e + E_LR]:
        return
    if seq <= 2 and W[s, F_IS_PARTIAL]:
        return  # Zeek's Undelivered ignores the faked first octets of a partial connection
    while S[s, e + E_B0HI] != 0 and S[s, e + E_B0LO] < seq:
        _gap(S, W, H, s, d, S[s, e + E_B0LO] - S[s, e + E_LR])
        S[s, e + E_LR] = S[s, e + E_B0LO]
        _deliver_blocks(S, W, s, e)
    if seq > S[s, e + E_LR]:
        _gap(S, W, H, s, d, seq - S[s, e + E_LR])
        S[s, e + E_LR] = seq


@njit(cache=True, _nrt=False)
def _state_machine(
    S: Any,
    W: Any,
    H: Any,
    s: Any,
    d: Any,
    t: Any,
    base: Any,
    ackn: Any,
    plen: Any,
    dlast: Any,
    fl: Any,
) -> tuple[bool, bool]:
    """Zeek's UpdateStateMachine for a packet from endpoint d; returns (do_close, gen_event)."""
    e = _ep(d)
    ew = _ew(d)
    pw = _ew(1 - d)
    is_orig = d == W[s, F_ODIR]
    syn = fl & SYN
    fin = fl & FIN
    rst = fl & RST
    ack = fl & ACK
    do_close = False
    gen = False
    st = W[s, ew + E_STATE]
    if st == INACTIVE:
        if syn:
            if is_orig:
                if ack:
                    _set_state(S, W, s, d, SYN_ACK_SENT)
                else:
                    _set_state(S, W, s, d, SYN_SENT)
                S[s, F_T_ATTEMPT] = min(S[s, F_T_ATTEMPT], t + TCP_ATTEMPT_DELAY)
            else:
                if (
                    not ack
                    and W[s, pw + E_STATE] == SYN_ACK_SENT
                    and (base & _M32) == S[s, e + E_START]
                ):
                    # SYN and SYN-ACK seen in reverse order: flip and establish
                    _flip(S, W, H, s)
                    W[s, F_ORIENT] = ORIENT_REVERSAL
                    _set_state(S, W, s, 1 - d, ESTABLISHED)
                if W[s, pw + E_STATE] == SYN_SENT:
                    _set_state(S, W, s, 1 - d, ESTABLISHED)
                _set_state(S, W, s, d, ESTABLISHED)
        if fin:
            _set_state(S, W, s, d, CLOSED)
            do_close = True
            gen = True
        if rst:
            _set_state(S, W, s, d, RESET)
            reject = False
            if is_orig:
                if W[s, pw + E_STATE] == ESTABLISHED:
                    reject = True
            elif W[s, pw + E_STATE] == SYN_SENT or W[s, pw + E_STATE] == SYN_ACK_SENT:
                reject = True
            do_close = True
            gen = not reject
            if reject:
                W[s, F_IS_ACTIVE] = 0
        if W[s, ew + E_STATE] == INACTIVE:
            if not is_orig and plen == 0 and W[s, _ew(W[s, F_ODIR]) + E_STATE] == SYN_SENT:
                pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
            elif ack and W[s, pw + E_STATE] == ESTABLISHED:
                _set_state(S, W, s, d, ESTABLISHED)
            else:
                _set_state(S, W, s, d, PARTIAL)
    elif st in (SYN_SENT, SYN_ACK_SENT):
        if fin:
            _set_state(S, W, s, d, CLOSED)
            do_close = True
            gen = True
        if rst:
            _set_state(S, W, s, d, RESET)
            W[s, F_IS_ACTIVE] = 0
            do_close = True
    elif st in (ESTABLISHED, PARTIAL):
        if syn and st == PARTIAL and W[s, pw + E_STATE] == INACTIVE and not ack:
            _set_state(S, W, s, d, SYN_SENT)
        if fin and not rst:
            _set_state(S, W, s, d, CLOSED)
            if W[s, pw + E_STATE] == RESET and W[s, pw + E_PREV] == CLOSED:
                # the peer's FIN then RST: a normal termination after all
                _set_state(S, W, s, 1 - d, CLOSED)
            do_close = True
            gen = True
        if rst:
            _set_state(S, W, s, d, RESET)
            do_close = True
            if W[s, pw + E_STATE] != RESET or W[s, pw + E_PREV] != ESTABLISHED:
                W[s, F_IS_ACTIVE] = 0
    elif st == CLOSED and rst and W[s, pw + E_STATE] != CLOSED:
        _set_state(S, W, s, d, RESET)
        if not W[s, ew + E_DID_CLOSE]:
            do_close = True
        S[s, F_T_RESET] = min(S[s, F_T_RESET], t + TCP_RESET_DELAY)
    return do_close, gen


@njit(cache=True, _nrt=False)
def _new_conn(
    S: Any,
    W: Any,
    H: Any,
    s: Any,
    uid: Any,
    stream: Any,
    conv: Any,
    d: Any,
    fl: Any,
    sport: Any,
    dport: Any,
    likely: Any,
    t: Any,
    continued: Any,
    src_hi: Any,
    src_lo: Any,
    dst_hi: Any,
    dst_lo: Any,
) -> None:
    """A new connection in slot s, started by a packet of direction d from src to dst."""
    # element by element: a row slice is an array view, which needs reference counting
    for j in range(NFIELDS):
        S[s, j] = 0
    for j in range(NFIELDS32):
        W[s, j] = 0
    W[s, F_ACTIVE] = 1
    S[s, F_UID] = uid
    S[s, F_STREAM] = stream
    S[s, F_CONV] = conv
    W[s, F_ODIR] = d
    W[s, F_ORIENT] = ORIENT_SYN if (fl & (SYN | ACK)) == SYN else ORIENT_FIRST
    S[s, F_START_TS] = t
    S[s, F_LAST_TS] = t
    S[s, F_SEEN_TS] = t
    W[s, F_IS_ACTIVE] = 1
    S[s, F_INACT] = UDP_INACTIVITY_TIMEOUT
    S[s, F_T_ATTEMPT] = NEVER
    S[s, F_T_DELETE] = NEVER
    S[s, F_T_EXPIRE] = t + TCP_SYN_TIMEOUT
    S[s, F_T_PARTIAL] = NEVER
    S[s, F_T_RESET] = NEVER
    S[s, F_SYN_TS] = -1
    S[s, F_SYNACK_TS] = -1
    S[s, F_HSACK_TS] = -1
    W[s, F_CONTINUED] = continued
    W[s, F_FIRST_FLAGS] = fl
    a = 0 if d == 0 else 2
    b = 2 - a
    S[s, F_A0HI + a] = src_hi
    S[s, F_A0HI + a + 1] = src_lo
    W[s, F_P0 + d] = sport
    S[s, F_A0HI + b] = dst_hi
    S[s, F_A0HI + b + 1] = dst_lo
    W[s, F_P1 - d] = dport
    for dd in range(2):
        ew = _ew(dd)
        W[s, ew + E_RX_TH] = 1
        W[s, ew + E_W0_TH] = 1
        W[s, ew + E_CK_TH] = 1
        W[s, ew + E_G_TH] = 1
        e = _ep(dd)
        S[s, e + E_LR] = 1  # Zeek's reassembler counts from 1
        S[s, e + E_TRIM] = 1
    # WantConnection: without a plain SYN, guess the responder from likely server ports
    if not ((fl & SYN) and not (fl & ACK)):
        flip = False
        if likely[sport]:
            if likely[dport]:
                flip = (fl & SYN) == 0 and sport < dport
            else:
                flip = True
        if flip:
            _flip(S, W, H, s)
            W[s, F_ORIENT] = ORIENT_PORT


@njit(cache=True, _nrt=False)
def _timers_due(
    S: Any, W: Any, s: Any, now: Any, zeek_timers: bool, idle_ns: Any, closed_idle_ns: Any
) -> Any:
    """The reason the connection in slot s is gone by time `now`, or -1 if it is still there."""
    # kept small so that LLVM inlines it and the idle check into the per-packet loop
    if zeek_timers:
        return _zeek_timers_due(S, W, s, now)
    return _idle_due(S, W, s, now, idle_ns, closed_idle_ns)


@njit(cache=True, _nrt=False)
def _idle_due(S: Any, W: Any, s: Any, now: Any, idle_ns: Any, closed_idle_ns: Any) -> Any:
    """Without Zeek's timers a connection goes when it has been idle long enough."""
    return _idle_due_at(S[s, F_SEEN_TS], _finished(W, s), now, idle_ns, closed_idle_ns)


@njit(cache=True, _nrt=False)
def _finished(W: Any, s: Any) -> bool:
    """Both sides closed, or one reset: the shorter idle time applies (`_idle_due_at`)."""
    w0 = _ew(0)
    w1 = _ew(1)
    return bool(
        (W[s, w0 + E_DID_CLOSE] and W[s, w1 + E_DID_CLOSE])
        or (W[s, w0 + E_STATE] == RESET or W[s, w1 + E_STATE] == RESET)
    )


@njit(cache=True, _nrt=False)
def _idle_due_at(seen: Any, finished: Any, now: Any, idle_ns: Any, closed_idle_ns: Any) -> Any:
    """`_idle_due` of a connection last seen at `seen` (a parked one has no slot to read)."""
    if finished and now - seen > closed_idle_ns:
        return END_IDLE
    if now - seen > idle_ns:
        return END_IDLE
    return -1


@njit(cache=True, _nrt=False)
def _idle_deadline(seen: Any, finished: Any, idle_ns: Any, closed_idle_ns: Any) -> Any:
    """The first capture time at which `_idle_due_at` lets the connection go."""
    wait = min(idle_ns, closed_idle_ns) if finished else idle_ns
    return seen + wait + 1


@njit(cache=True, _nrt=False)
def _zeek_timers_due(S: Any, W: Any, s: Any, now: Any) -> Any:
    """Fire Zeek's timers due by `now` in order; the reason the connection ends, or -1."""
    for _ in range(1_000_000):
        # the earliest due timer fires first
        tmin = NEVER
        which = -1
        for f in (F_T_DELETE, F_T_RESET, F_T_ATTEMPT, F_T_PARTIAL, F_T_EXPIRE):
            if S[s, f] < tmin:
                tmin = S[s, f]
                which = f
        inact_at = S[s, F_LAST_TS] + S[s, F_INACT]
        if inact_at <= tmin and inact_at <= now:
            return END_INACTIVITY
        if tmin > now:
            return -1
        S[s, which] = NEVER
        w_o = _ew(W[s, F_ODIR])
        w_r = _ew(1 - W[s, F_ODIR])
        os_ = W[s, w_o + E_STATE]
        rs_ = W[s, w_r + E_STATE]
        if which == F_T_DELETE:
            return END_CLOSE_DELAY
        if which == F_T_RESET:
            if W[s, F_IS_ACTIVE]:
                return END_RESET_DELAY
            continue
        if not W[s, F_IS_ACTIVE]:
            continue
        if which == F_T_ATTEMPT:
            if (os_ in (SYN_SENT, SYN_ACK_SENT)) and rs_ == INACTIVE:
                return END_ATTEMPT
        elif which == F_T_PARTIAL:
            if (
                (
                    os_ != INACTIVE
                    and rs_ != INACTIVE
                    and not (W[s, w_o + E_DID_CLOSE] and W[s, w_r + E_DID_CLOSE])
                )
                and os_ != RESET
                and rs_ != RESET
            ):
                return END_PARTIAL_CLOSE
        else:  # expire
            if S[s, F_LAST_TS] + TCP_CONNECTION_LINGER < tmin:
                oc = W[s, w_o + E_DID_CLOSE]
                rc = W[s, w_r + E_DID_CLOSE]
                if (oc or rc) and (
                    (oc and rc) or os_ in (RESET, INACTIVE) or rs_ in (RESET, INACTIVE)
                ):
                    return END_EXPIRE
                if rs_ == INACTIVE and os_ == INACTIVE:
                    return END_EXPIRE
            S[s, F_T_EXPIRE] = min(S[s, F_T_EXPIRE], tmin + TCP_SESSION_TIMER)
    return -1


@njit(cache=True, _nrt=False)
def _is_reuse(S: Any, W: Any, s: Any, d: Any, fl: Any, seq: Any) -> bool:
    """Zeek's IsReuse: a SYN that starts a new connection on the same 4-tuple."""
    if not (fl & SYN):
        return False
    o = W[s, F_ODIR]
    co = o
    if fl & ACK:
        if W[s, _ew(o) + E_STATE] != INACTIVE:
            return False
        co = 1 - o
    closed = W[s, _ew(0) + E_DID_CLOSE] or W[s, _ew(1) + E_DID_CLOSE]
    if not closed:
        if (seq & _M32) == S[s, _ep(co) + E_START]:
            return False
        r = 1 - o
        if (
            not (fl & ACK)
            and W[s, _ew(co) + E_STATE] == SYN_ACK_SENT
            and W[s, _ew(r) + E_STATE] == INACTIVE
            and (seq & _M32) == S[s, _ep(r) + E_START]
        ):
            return False
    return True


@njit(cache=True, _nrt=False)
def _emit(
    S: Any,
    W: Any,
    H: Any,
    parked: Any,
    conv_slot: Any,
    s: Any,
    r: Any,
    reason: Any,
    OUT: Any,
    OW: Any,
    OH: Any,
    k: Any,
    free: Any,
    nfree: Any,
    now: Any,
) -> Any:
    """Record k of OUT, OW and OH: the connection of slot s, from row r (s itself, or the
    scratch slot a parked connection was replayed into, `_unpark`), as of capture time `now`;
    s goes back on the free list and its conversation has no slot."""
    conv_slot[S[r, F_CONV]] = -1
    W[r, F_REASON] = reason
    S[r, F_AS_OF] = now
    for j in range(NFIELDS):
        OUT[k, j] = S[r, j]
    for j in range(NFIELDS32):
        OW[k, j] = W[r, j]
    for j in range(HIST_MAX):
        OH[k, j] = H[r, j]
    W[r, F_ACTIVE] = 0
    parked[s] = False
    free[nfree] = s
    return nfree + 1


@njit(cache=True, _nrt=False)
def _attempt_due(S: Any, W: Any, s: Any, now: Any) -> Any:
    """END_ATTEMPT if Zeek's attempt timer has removed the connection in slot s by `now`: its
    originator sent a SYN 5 s ago or more and the responder has sent nothing; else -1."""
    if S[s, F_T_ATTEMPT] > now or not W[s, F_IS_ACTIVE]:
        return -1
    o = W[s, F_ODIR]
    os_ = W[s, _ew(o) + E_STATE]
    if os_ in (SYN_SENT, SYN_ACK_SENT) and W[s, _ew(1 - o) + E_STATE] == INACTIVE:
        return END_ATTEMPT
    return -1


@njit(cache=True, _nrt=False)
def _packet(
    S: Any,
    W: Any,
    H: Any,
    s: Any,
    tk: Any,
    d: Any,
    t: Any,
    fl: Any,
    sq: Any,
    ak: Any,
    ln: Any,
    win: Any,
    ipl: Any,
    csum: Any,
    trunc: Any,
    retx: Any,
    zwin: Any,
    check_csum: Any,
    Q: Any,
    qmeta: Any,
    push: Any,
) -> bool:
    """One packet of direction d through the connection in slot s (Zeek's per-packet logic);
    True if the RFC state machine will need the packet (see connections.py). An attempt
    timer it arms goes on the ring Q (`process_chunk`) as slot `tk`'s, if `push` (a parked
    connection's packet replayed armed it already)."""
    if s < 0 or d < 0 or d > 1:
        return False  # never: it tells LLVM that s >= 0 and d is 0 or 1 below
    S[s, F_SEEN_TS] = t
    e = _ep(d)
    p = _ep(1 - d)
    ew = _ew(d)
    pw = _ew(1 - d)

    # a lone SYN-ACK is flipped when the other side answers with an ACK or data
    if (
        W[s, F_HLEN] == 1
        and H[s, 0] == 72  # 'H'
        and d != W[s, F_ODIR]
        and not (fl & (SYN | FIN | RST))
        and ((fl & ACK) or ln > 0)
    ):
        W[s, F_ODIR] = d
        H[s, 0] = 94  # '^'
        H[s, 1] = 104  # 'h'
        W[s, F_HLEN] = 2
        W[s, F_ORIENT] = ORIENT_SYNACK
        _set_state(S, W, s, 1 - d, ESTABLISHED)

    # checksum: Zeek drops the packet after noting it (history C/c)
    if check_csum and csum == 0:
        _scaled(S, W, H, s, d, E_CK_CNT, E_CK_TH, 67)  # 'C'
        return False

    # Zeek's SetPartialStatus: partial unless each side's first packet was its SYN
    seen = W[s, F_FIRST_SEEN]
    if d == W[s, F_ODIR]:
        if not (seen & 1):
            W[s, F_IS_PARTIAL] = 1 if (not (fl & SYN) or (fl & ACK)) else 0
            W[s, F_FIRST_SEEN] = seen | 1
    elif not (seen & 2):
        if not W[s, F_IS_PARTIAL]:
            W[s, F_IS_PARTIAL] = 0 if (fl & SYN) else 1
        W[s, F_FIRST_SEEN] = seen | 2

    is_orig = d == W[s, F_ODIR]
    syn = fl & SYN
    fin = fl & FIN
    rst = fl & RST
    seg = ln + (1 if syn else 0) + (1 if fin else 0)
    if rst:
        seg -= ln
    end = (sq + seg) & _M32

    # which rows the RFC state machine will need (see connections.py)
    keep = (fl & (SYN | FIN | RST)) != 0
    if syn:
        W[s, pw + E_FIRST_KEPT] = 0  # the peer's answer to each (re)sent SYN matters
    if not keep and W[s, ew + E_FIRST_KEPT] < 2:
        keep = True
        W[s, ew + E_FIRST_KEPT] += 1
    if not keep and (fl & ACK) and W[s, pw + E_FIN_CNT] > 0:
        fa = W[s, pw + E_FIN_ACKED]
        if _sdelta(ak, S[s, p + E_FIN_END]) >= 0:
            if not (fa & 1):
                keep = True
                W[s, pw + E_FIN_ACKED] = fa | 1
        elif not (fa & 3):
            keep = True
            W[s, pw + E_FIN_ACKED] = fa | 2

    # init_endpoint
    st = W[s, ew + E_STATE]
    if st == INACTIVE:
        if syn:
            _init_seq(S, W, s, d, sq, end)
        else:
            _init_seq(S, W, s, d, sq - 1, sq)
    elif st in (SYN_SENT, SYN_ACK_SENT):
        if syn and (sq & _M32) != S[s, e + E_START]:
            _init_seq(S, W, s, d, sq, end)
    elif st in (ESTABLISHED, PARTIAL):
        if syn:
            _init_seq(S, W, s, d, sq, end)
    elif st == RESET and syn and W[s, ew + E_PREV] == INACTIVE:
        _init_seq(S, W, s, d, sq, end)

    last_raw = _raw(S, W, s, d, S[s, e + E_LAST])
    rel = S[s, e + E_LAST] + _sdelta(sq, last_raw)

    # update_history
    bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits > 1:
        if fin and rst:
            _check_hist(S, W, H, s, d, H_FIN_RST, 73)  # 'I'
        else:
            _check_hist(S, W, H, s, d, H_MULTI, 81)  # 'Q'
    elif bits == 1:
        if syn:
            code = 72 if (fl & ACK) else 83  # 'H' / 'S'
            if _check_hist(S, W, H, s, d, H_SYN, code) and rel != S[s, e + E_HL_SYN]:
                _letter(S, W, H, s, d, code)
            S[s, e + E_HL_SYN] = rel
        if fin:
            if _check_hist(S, W, H, s, d, H_FIN, 70) and rel + ln != S[s, e + E_HL_FIN]:
                _letter(S, W, H, s, d, 70)
            S[s, e + E_HL_FIN] = rel + ln
        if rst:
            if _check_hist(S, W, H, s, d, H_RST, 82) and rel != S[s, e + E_HL_RST]:
                _letter(S, W, H, s, d, 82)
            S[s, e + E_HL_RST] = rel
    else:
        if ln:
            _check_hist(S, W, H, s, d, H_DATA, 68)  # 'D'
        elif fl & ACK:
            _check_hist(S, W, H, s, d, H_ACK, 65)  # 'A'

    # update_window: zero windows
    if win == 0 and not rst:
        if zwin < 0:
            W[s, ew + E_ZWIN] += 1
        if W[s, pw + E_STATE] != CLOSED and W[s, ew + E_STATE] != RESET:
            _scaled(S, W, H, s, d, E_W0_CNT, E_W0_TH, 87)  # 'W'
    if zwin > 0:
        W[s, ew + E_ZWIN] += 1

    if not (W[s, ew + E_DID_CLOSE] and W[s, pw + E_DID_CLOSE]):
        S[s, F_LAST_TS] = t

    if fin:
        W[s, ew + E_FIN_CNT] += 1
        S[s, e + E_FIN_END] = end
        S[s, e + E_FIN_REL] = rel + seg
        W[s, ew + E_FIN_ACKED] = 0
        _note_close(S, W, s, d, 0)
    if rst:
        _note_close(S, W, s, d, 1)

    # handshake times, for the initial RTT
    if syn and not (fl & ACK) and is_orig and S[s, F_SYN_TS] < 0:
        S[s, F_SYN_TS] = t
    elif syn and (fl & ACK) and not is_orig and S[s, F_SYN_TS] >= 0 and S[s, F_SYNACK_TS] < 0:
        S[s, F_SYNACK_TS] = t
    elif not syn and (fl & ACK) and is_orig and S[s, F_SYNACK_TS] >= 0 and S[s, F_HSACK_TS] < 0:
        S[s, F_HSACK_TS] = t

    # the ACK field
    rel_ack = 0
    if fl & ACK:
        if W[s, pw + E_STATE] == INACTIVE:
            _init_seq(S, W, s, 1 - d, ak - 1, ak - 1)
            rel_ack = 1
        else:
            pa_raw = _raw(S, W, s, 1 - d, S[s, p + E_ACKR])
            da = _sdelta(ak, pa_raw)
            prel = S[s, p + E_ACKR] + da
            rel_ack = prel if prel >= 0 else 0
            if (
                not rst
                and prel >= 0
                and not ((ak & _M32) == 0 and da > TOO_LARGE_SEQ_DELTA)
                and da > 0
            ):
                S[s, p + E_ACKR] += da

    # update_last_seq
    dlast = _sdelta(end, last_raw)
    if (syn or rst) and (dlast > TOO_LARGE_SEQ_DELTA or dlast < -TOO_LARGE_SEQ_DELTA):
        pass
    elif fin and S[s, e + E_LAST] == 1:
        S[s, e + E_LAST] += dlast
    elif W[s, ew + E_STATE] == RESET:
        pass
    elif dlast > 0:
        S[s, e + E_LAST] += dlast
    elif ln > 0:
        _scaled(S, W, H, s, d, E_RX_CNT, E_RX_TH, 84)  # 'T'
        if retx < 0:
            W[s, ew + E_RETX] += 1
    if retx > 0:
        W[s, ew + E_RETX] += 1

    # without SYN, FIN or RST only an INACTIVE endpoint changes state
    do_close = False
    if (fl & (SYN | FIN | RST)) or W[s, ew + E_STATE] == INACTIVE:
        armed = S[s, F_T_ATTEMPT]
        do_close, _gen = _state_machine(S, W, H, s, d, t, sq, ak, ln, dlast, fl)
        if push and S[s, F_T_ATTEMPT] != armed:
            q = qmeta[1] & (Q.shape[0] - 1)
            Q[q, 0] = S[s, F_T_ATTEMPT]
            Q[q, 1] = tk
            Q[q, 2] = S[s, F_UID]
            qmeta[1] += 1

    # the reassembler: acknowledged data never seen is a content gap; then this data
    if fl & ACK:
        _ack_received(S, W, H, s, 1 - d, rel_ack)
    if ln > 0 and not rst and not trunc and rel >= 0:
        _data_sent(S, W, s, d, rel + 1 if syn else rel, ln)

    # ConnSize: packets and IP bytes that got past the checksum
    S[s, e + E_PKTS] += 1
    S[s, e + E_IPBYTES] += ipl
    S[s, e + E_PAYLOAD] += ln

    if do_close:
        _close(S, W, s, d)
    return keep


@njit(cache=True, _nrt=False)
def _sx8(v: Any) -> Any:
    """A signed byte back from P_BITS."""
    v = v & 0xFF
    return v - 256 if v >= 128 else v


@njit(cache=True, _nrt=False)
def _unpark(pool: Any, s: Any, to: Any, likely: Any, check_csum: Any, Q: Any, qmeta: Any) -> None:
    """The state of parked slot s, into slot `to`: its packet replayed by the code that ran it
    first (`_new_conn`, `_packet`). Into s itself, the connection is parked no more; into the
    scratch slot, it stays parked (its record is written from there)."""
    S, W, H, _, _, P, parked = pool
    bits = P[s, P_BITS]
    fl = bits & 0xFFFF
    d = (bits >> 16) & 1
    ports = P[s, P_PORTS]
    sport = (ports >> 32) & 0xFFFF
    dport = (ports >> 16) & 0xFFFF
    t = P[s, P_TS]
    _new_conn(
        S, W, H, to, P[s, P_UID], P[s, P_STREAM], P[s, P_CONV], d, fl, sport, dport, likely, t,
        (bits >> 17) & 1, P[s, P_SRC_HI], P[s, P_SRC_LO], P[s, P_DST_HI], P[s, P_DST_LO],
    )  # fmt: skip
    _packet(
        S, W, H, to, s, d, t, fl, P[s, P_SEQ], P[s, P_ACK], P[s, P_LENS] >> 32, ports & 0xFFFF,
        P[s, P_LENS] & 0xFFFFFFFF, _sx8(bits >> 24), ((bits >> 18) & 1) == 1, _sx8(bits >> 32),
        _sx8(bits >> 40), check_csum, Q, qmeta, False,
    )  # fmt: skip
    if to == s:
        parked[s] = False


@njit(cache=True, _nrt=False)
def _hand_over(P: Any, s: Any, LK: Any, lkmeta: Any) -> None:
    """Parked slot s's packet as the next row of LK, if the state machine is given it: the
    connection is parked no more (see LK)."""
    bits = P[s, P_BITS]
    if not (bits >> 49) & 1:
        return
    j = lkmeta[0]
    LK[j, LK_UID] = P[s, P_UID]
    LK[j, LK_DIR] = (bits >> 16) & 1
    LK[j, LK_FLAGS] = bits & 0xFFFF
    LK[j, LK_SEQ] = P[s, P_SEQ]
    LK[j, LK_ACK] = P[s, P_ACK]
    LK[j, LK_PLEN] = P[s, P_LENS] >> 32
    LK[j, LK_TS] = P[s, P_TS]
    LK[j, LK_FRAME] = P[s, P_FRAME]
    lkmeta[0] = j + 1


@njit(cache=True, inline="always")
def _scratch(S: Any) -> Any:
    """The scratch slot: S, W and H's last row, outside the pool; parked connections are
    replayed there to be written out."""
    return S.shape[0] - 1


@njit(cache=True, _nrt=False)
def _held(
    pool: Any,
    s: Any,
    uid: Any,
    check_seen: Any,
    seen: Any,
    likely: Any,
    check_csum: Any,
    Q: Any,
    qmeta: Any,
) -> Any:
    """The row holding the state of connection `uid` in slot s (last seen at `seen`, if
    `check_seen`), or -1 if the slot holds another now: s itself, or for a parked one the
    scratch slot, its packet replayed there."""
    S, W, _, _, _, P, parked = pool
    if parked[s]:
        if P[s, P_UID] != uid or (check_seen and P[s, P_TS] != seen):
            return -1
        r = _scratch(S)
        _unpark(pool, s, r, likely, check_csum, Q, qmeta)
        return r
    if not W[s, F_ACTIVE] or S[s, F_UID] != uid or (check_seen and S[s, F_SEEN_TS] != seen):
        return -1
    return s


_ROW_COLUMNS = ("ts_ns", "flags", "seq", "ack", "win", "payload_len", "ip_len", "sport", "dport")
"""`process_chunk`'s packet columns after the stream tracker's, as their schema types them."""


_POOL = tuple_of("i8[:,:] i4[:,:] u1[:,:] i8[:] i8[:] i8[:,:] b1[:]")
"""The slot pool's arrays, one tuple: the slots' state (S, W, H), the free list, each
conversation's slot, the parked connections' packets and marks (P, parked)."""
_RECORDS = tuple_of("i8[:,:] i4[:,:] u1[:,:]")
"""The rows of the records a loop emits, one tuple (OUT, OW, OH: S's, W's and H's rows)."""
_TIMERS = "i8[:,:] i8[:]"
"""The ring of attempt timers and its [head, tail] (Q, qmeta)."""
_HANDED = "i8[:,:] i8[:]"
"""Parked connections' packets handed over (LK) and how many rows of it are filled."""


@kernel(
    f"{_POOL} i8 i8 i8 i8[:] i8[:] b1[:] i1[:] "
    f"{array_types(COLUMNS, _ROW_COLUMNS)} i8[:] i8[:] i8[:] i8[:] "
    f"{array_types(COLUMNS, ('csum_ok', 'truncated'))} i1[:] i1[:] b1[:] b1 b1 i8 i8 "
    f"i8[:] b1[:] {_RECORDS} {_TIMERS} b1 b1 i8[:,:] i8[:] "
    f"{array_types(COLUMNS, ('frame',))} {_HANDED} i8 -> (i8, i8, i8, i8)",
    nogil=True,
)
def process_chunk(
    pool: Any,
    nfree: int,
    next_uid: int,
    first: int,
    # per-row inputs
    conv: Any,
    stream: Any,
    new: Any,
    pdir: Any,
    ts: Any,
    flags: Any,
    seq: Any,
    ackn: Any,
    win: Any,
    plen: Any,
    ip_len: Any,
    sport: Any,
    dport: Any,
    src_hi: Any,
    src_lo: Any,
    dst_hi: Any,
    dst_lo: Any,
    csum_ok: Any,
    trunc: Any,
    ext_retx: Any,
    ext_zwin: Any,
    # settings
    likely: Any,
    check_csum: bool,
    zeek_timers: bool,
    idle_ns: int,
    closed_idle_ns: int,
    # outputs
    row_uid: Any,
    row_keep: Any,
    records: Any,
    # attempt timers, in the order they were armed: (due time, slot, uid) rows of a ring
    Q: Any,
    qmeta: Any,
    # park new connections' pure SYNs (see P)
    park: bool,
    # at the memory cap: free slots from those timers, then from the victims
    at_cap: bool,
    victims: Any,
    vmeta: Any,
    frame: Any,
    LK: Any,
    lkmeta: Any,
    # the capture time of the next sweep (`tcpwhy.tcp.connections`' `_sweep_after`)
    sweep_at: int,
) -> tuple[int, int, int, int]:
    """Run the rows of a chunk from `first` on through their connections; returns (nfree,
    next_uid, records emitted into OUT, the row it stopped at). It stops early, for the caller
    to make room and call again from there, when no slot is free (a row may start a
    connection), OUT is full (a row may end one) or the ring Q is full, and before the first
    row at or after `sweep_at`, for the caller to sweep the idle connections then: sweeps
    fall on capture time, whatever the chunks the capture is read in.

    Every connection whose attempt timer is armed goes on Q (`qmeta` = [head, tail], counted
    from the start; the ring holds Q.shape[0] rows, a power of two). When no slot is free and
    `at_cap` is set (the pool has `max_active` slots), the connections on Q whose attempt
    timer is due by the row's time are checked first: in Zeek's terms (``zeek_timers``) the
    timers due are fired as Zeek fires them; in stream terms an unanswered attempt ends there
    (END_ATTEMPT), as Zeek would end it. Only then is a victim evicted: `victims` rows are
    (slot, uid, seen time) of the connections idle longest when the caller listed them, idlest
    first, `vmeta` = [next victim, victims evicted]; a victim that has seen a packet since is
    skipped (the connections listed later are all less idle). With no victim left the loop
    returns for the caller to list more.

    A parked connection's packet is not a kept row (`row_keep`): it is handed over in LK when
    the connection stops being parked (see LK), which needs no more rows of LK than records
    emitted and rows run in the call."""
    S, W, H, free, conv_slot, P, parked = pool
    OUT, OW, OH = records
    k = 0
    qmask = Q.shape[0] - 1
    for i in range(first, conv.shape[0]):
        if k == OUT.shape[0] or qmeta[1] - qmeta[0] > qmask or ts[i] >= sweep_at:
            return nfree, next_uid, k, i
        if nfree == 0 and at_cap:
            t = ts[i]
            while nfree == 0 and qmeta[0] < qmeta[1] and k < OUT.shape[0]:
                q = qmeta[0] & qmask
                if Q[q, 0] > t:
                    break
                qmeta[0] += 1
                s = Q[q, 1]
                r = _held(pool, s, Q[q, 2], False, 0, likely, check_csum, Q, qmeta)
                if r < 0:
                    continue
                if zeek_timers:
                    why = _zeek_timers_due(S, W, r, t)
                else:
                    why = _attempt_due(S, W, r, t)
                if why >= 0:
                    if r != s:
                        _hand_over(P, s, LK, lkmeta)
                    nfree = _emit(
                        S, W, H, parked, conv_slot, s, r, why, OUT, OW, OH, k, free, nfree, t
                    )
                    k += 1
            while nfree == 0 and vmeta[0] < victims.shape[0] and k < OUT.shape[0]:
                v = vmeta[0]
                vmeta[0] += 1
                s = victims[v, 0]
                r = _held(pool, s, victims[v, 1], True, victims[v, 2], likely, check_csum, Q, qmeta)
                if r < 0:
                    continue
                if r != s:
                    _hand_over(P, s, LK, lkmeta)
                nfree = _emit(
                    S, W, H, parked, conv_slot, s, r, END_EVICTED, OUT, OW, OH, k, free, nfree, t
                )
                k += 1
                vmeta[1] += 1
        if nfree == 0 or k == OUT.shape[0]:
            return nfree, next_uid, k, i
        c = conv[i]
        if check_csum and csum_ok[i] == -2:
            # a check below TCP failed (IPv4 header checksum, a tunnel's UDP checksum): Zeek
            # drops the packet before any connection sees it; -2 marks a stream whose first
            # packet went so, for the next one not to read as a continuation
            if new[i] and conv_slot[c] < 0:
                conv_slot[c] = -2
            continue
        d = np.int64(pdir[i]) & 1  # 0 or 1, and LLVM now knows it (see below)
        t = ts[i]
        fl = np.int64(flags[i])
        sq = np.int64(seq[i])
        ak = np.int64(ackn[i])
        ln = np.int64(plen[i])
        s = conv_slot[c]
        if s >= 0 and parked[s]:
            # its second packet: the connection takes its slot's state from here on
            _hand_over(P, s, LK, lkmeta)
            _unpark(pool, s, s, likely, check_csum, Q, qmeta)
        if s >= 0 and S[s, F_STREAM] != stream[i]:
            # Wireshark started a new stream on this 4-tuple: the old one is over
            nfree = _emit(
                S, W, H, parked, conv_slot, s, s, END_PORT_REUSE, OUT, OW, OH, k, free, nfree, t
            )
            k += 1
            s = -1
        if s >= 0:
            why = _timers_due(S, W, s, t, zeek_timers, idle_ns, closed_idle_ns)
            if why < 0 and zeek_timers and _is_reuse(S, W, s, d, fl, sq):
                why = END_REUSE
            if why >= 0:
                nfree = _emit(S, W, H, parked, conv_slot, s, s, why, OUT, OW, OH, k, free, nfree, t)
                k += 1
                s = -1
                continued = 1
            else:
                continued = 0
        else:
            continued = 0 if (new[i] or s == -2) else 1
        tk = s  # the slot the connection holds
        if s < 0:
            nfree -= 1
            tk = free[nfree]
            conv_slot[c] = tk
            # a pure SYN that starts a connection is parked (see P) once the pool is large
            s = (
                _scratch(S)
                if park
                and not zeek_timers
                and (fl & (SYN | ACK | FIN | RST)) == SYN
                and not (check_csum and csum_ok[i] == 0)
                else tk
            )
            _new_conn(
                S, W, H, s, next_uid, stream[i], c, d, fl, sport[i], dport[i], likely, t,
                continued, src_hi[i], src_lo[i], dst_hi[i], dst_lo[i],
            )  # fmt: skip
            next_uid += 1
        if s < 0:
            continue  # never: it tells LLVM that s >= 0 below
        row_uid[i] = S[s, F_UID]
        w = np.int64(win[i])
        ipl = np.int64(ip_len[i])
        cs = np.int64(csum_ok[i])
        rx = np.int64(ext_retx[i])
        zw = np.int64(ext_zwin[i])
        keep = _packet(
            S, W, H, s, tk, d, t, fl, sq, ak, ln, w, ipl, cs, trunc[i], rx, zw, check_csum, Q,
            qmeta, True,
        )  # fmt: skip
        row_keep[i] = keep and s == tk
        if s != tk:
            # parked: the packet into P, in the layout `_unpark` reads (see P_BITS)
            P[tk, P_UID] = S[s, F_UID]
            P[tk, P_STREAM] = stream[i]
            P[tk, P_CONV] = c
            P[tk, P_TS] = t
            P[tk, P_SEQ] = sq
            P[tk, P_ACK] = ak
            P[tk, P_SRC_HI] = src_hi[i]
            P[tk, P_SRC_LO] = src_lo[i]
            P[tk, P_DST_HI] = dst_hi[i]
            P[tk, P_DST_LO] = dst_lo[i]
            P[tk, P_PORTS] = (np.int64(sport[i]) << 32) | (np.int64(dport[i]) << 16) | w
            P[tk, P_LENS] = (ln << 32) | ipl
            P[tk, P_BITS] = (
                fl
                | (d << 16)
                | (np.int64(continued) << 17)
                | (np.int64(1 if trunc[i] else 0) << 18)
                | ((cs & 0xFF) << 24)
                | ((rx & 0xFF) << 32)
                | ((zw & 0xFF) << 40)
                | (np.int64(1 if _finished(W, s) else 0) << 48)
                | (np.int64(1 if keep else 0) << 49)
            )
            P[tk, P_FRAME] = np.int64(frame[i])
            parked[tk] = True
            W[s, F_ACTIVE] = 0
    return nfree, next_uid, k, conv.shape[0]


@kernel(
    f"{_POOL} i8 b1[:] b1 i8[:] i8 b1 i8 i8 b1 i8 {_RECORDS} {_TIMERS} {_HANDED} -> (i8, i8, i8)",
    nogil=True,
)
def sweep(
    pool: Any,
    nfree: int,
    likely: Any,
    check_csum: bool,
    slots: Any,
    now: int,
    zeek_timers: bool,
    idle_ns: int,
    closed_idle_ns: int,
    force: bool,
    reason: int,
    records: Any,
    Q: Any,
    qmeta: Any,
    LK: Any,
    lkmeta: Any,
) -> tuple[int, int, int]:
    """Emit the given active slots whose time is up by `now` (all of them if `force`); a
    parked one's packet is handed over in LK (one row at most per slot). Also returns, without
    Zeek's timers, the earliest capture time at which one of those left becomes idle long
    enough to go (`_idle_deadline`; NEVER if none is left)."""
    S, W, H, free, conv_slot, P, parked = pool
    OUT, OW, OH = records
    k = 0
    soonest = NEVER
    for j in range(slots.shape[0]):
        s = slots[j]
        r = s
        if parked[s]:
            if not force and not zeek_timers:
                # its idle time needs no replay
                fin = (P[s, P_BITS] >> 48) & 1
                if _idle_due_at(P[s, P_TS], fin, now, idle_ns, closed_idle_ns) < 0:
                    at = _idle_deadline(P[s, P_TS], fin, idle_ns, closed_idle_ns)
                    soonest = min(soonest, at)
                    continue
            r = _scratch(S)
            _unpark(pool, s, r, likely, check_csum, Q, qmeta)
        elif not W[s, F_ACTIVE]:
            continue
        why = reason if force else _timers_due(S, W, r, now, zeek_timers, idle_ns, closed_idle_ns)
        if why >= 0:
            if r != s:
                _hand_over(P, s, LK, lkmeta)
            nfree = _emit(S, W, H, parked, conv_slot, s, r, why, OUT, OW, OH, k, free, nfree, now)
            k += 1
        elif not zeek_timers:
            at = _idle_deadline(S[r, F_SEEN_TS], _finished(W, r), idle_ns, closed_idle_ns)
            soonest = min(soonest, at)
    return nfree, k, soonest


@kernel(f"{_POOL} i8[:] i8 i8 i8[:] -> none", nogil=True)
def slot_field(pool: Any, slots: Any, field: int, pfield: int, out: Any) -> None:
    """Field `field` of S of the connections in `slots`, column `pfield` of P for those parked
    (`PARKED_AS`): one pass, where numpy's gathers and mask took three over half a million
    slots at every listing of victims on a flood."""
    S, _, _, _, _, P, parked = pool
    for j in range(slots.shape[0]):
        s = slots[j]
        out[j] = P[s, pfield] if parked[s] else S[s, field]


def zeek_conn_state(
    orig_state: int, resp_state: int, orig_size: int, resp_size: int, history: str
) -> str:
    """Zeek's conn_state() from base/protocols/conn/main.zeek."""
    os_, rs = orig_state, resp_state
    o_inactive = os_ in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os_ in (SYN_SENT, SYN_ACK_SENT) or (os_ == RESET and orig_size == 0 and resp_size == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == RESET:
        if r_inactive:
            return "RSTOS0" if _rstos0(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os_ == CLOSED:
        return "SF"
    if os_ == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os_ == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def _rstos0(history: str) -> bool:
    """/^\\^?S[^HAFGIQ]*R.*/ (Zeek patterns match the whole string)."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False


def zeek_size(
    start: int, last: int, ackr: int, fin_cnt: int, state: int, prev: int, peer_state: int
) -> int:
    """Zeek's TCP_Endpoint::Size(): payload bytes from sequence numbers."""
    if prev == SYN_SENT and state == RESET and peer_state == INACTIVE and ackr not in (0, 1):
        return 0
    size = last if last > ackr else ackr
    if size != 0:
        size -= 1
    if fin_cnt > 0 and size != 0:
        size -= 1
    return size & 0xFFFFFFFFFFFFFFFF


# --- emitted rows as record columns -------------------------------------------------------
# rows of `record_sides`' output: per record, the originator's and the responder's values
_R = _Columns()
R_ORIG_HI = _R.take()
R_ORIG_LO = _R.take()
R_ORIG_P = _R.take()
R_RESP_HI = _R.take()
R_RESP_LO = _R.take()
R_RESP_P = _R.take()
R_ORIG_PKTS = _R.take()
R_RESP_PKTS = _R.take()
R_ORIG_PAYLOAD = _R.take()
R_RESP_PAYLOAD = _R.take()
R_ORIG_IPBYTES = _R.take()
R_RESP_IPBYTES = _R.take()
R_ORIG_SIZE = _R.take()
R_RESP_SIZE = _R.take()
R_RETX = _R.take()
R_ZWIN = _R.take()
R_ZEEK_ORIG = _R.take()
R_ZEEK_RESP = _R.take()
R_IRTT = _R.take()
NSIDES = _R.n
IRTT_NONE = np.iinfo(np.int64).min
"""`R_IRTT` of a connection without a full handshake."""


@njit(cache=True, inline="always")
def _size_of(OUT: Any, OW: Any, i: Any, d: Any, peer_state: Any) -> Any:
    """Zeek's TCP_Endpoint::Size() of endpoint d of emitted row i (`zeek_size`)."""
    e = _ep(d)
    ew = _ew(d)
    last = OUT[i, e + E_LAST]
    ackr = OUT[i, e + E_ACKR]
    if (
        OW[i, ew + E_PREV] == SYN_SENT
        and OW[i, ew + E_STATE] == RESET
        and peer_state == INACTIVE
        and ackr != 0
        and ackr != 1
    ):
        return 0
    size = last if last > ackr else ackr
    if size != 0:
        size -= 1
    if OW[i, ew + E_FIN_CNT] > 0 and size != 0:
        size -= 1
    return size


@kernel("i8[:,:] i4[:,:] i8[:,:] -> none", nogil=True)
def record_sides(OUT: Any, OW: Any, R: Any) -> None:
    """The columns of emitted rows that depend on which endpoint originates (``F_ODIR``),
    one row of `R` per ``R_*`` field: addresses, ports, counters, Zeek's sizes and endpoint
    states, and the initial RTT."""
    for i in range(OUT.shape[0]):
        o = np.int64(OW[i, F_ODIR]) & 1
        r = 1 - o
        eo = _ep(o)
        er = _ep(r)
        wo = _ew(o)
        wr = _ew(r)
        R[R_ORIG_HI, i] = OUT[i, F_A0HI + 2 * o]
        R[R_ORIG_LO, i] = OUT[i, F_A0HI + 2 * o + 1]
        R[R_ORIG_P, i] = OW[i, F_P0 + o]
        R[R_RESP_HI, i] = OUT[i, F_A0HI + 2 * r]
        R[R_RESP_LO, i] = OUT[i, F_A0HI + 2 * r + 1]
        R[R_RESP_P, i] = OW[i, F_P0 + r]
        R[R_ORIG_PKTS, i] = OUT[i, eo + E_PKTS]
        R[R_RESP_PKTS, i] = OUT[i, er + E_PKTS]
        R[R_ORIG_PAYLOAD, i] = OUT[i, eo + E_PAYLOAD]
        R[R_RESP_PAYLOAD, i] = OUT[i, er + E_PAYLOAD]
        R[R_ORIG_IPBYTES, i] = OUT[i, eo + E_IPBYTES]
        R[R_RESP_IPBYTES, i] = OUT[i, er + E_IPBYTES]
        zo = OW[i, wo + E_STATE]
        zr = OW[i, wr + E_STATE]
        R[R_ORIG_SIZE, i] = _size_of(OUT, OW, i, o, zr)
        R[R_RESP_SIZE, i] = _size_of(OUT, OW, i, r, zo)
        R[R_RETX, i] = OW[i, wo + E_RETX] + OW[i, wr + E_RETX]
        R[R_ZWIN, i] = OW[i, wo + E_ZWIN] + OW[i, wr + E_ZWIN]
        R[R_ZEEK_ORIG, i] = zo
        R[R_ZEEK_RESP, i] = zr
        hs = OUT[i, F_HSACK_TS]
        sy = OUT[i, F_SYN_TS]
        R[R_IRTT, i] = hs - sy if hs >= 0 and sy >= 0 else IRTT_NONE
