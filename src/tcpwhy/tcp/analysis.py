"""Wireshark's TCP sequence analysis flags, per packet, with the same meanings and names.

Wireshark evaluates each packet once, in file order, against per-direction
state: the next expected sequence number, the highest in-order sequence
number still to be acknowledged, the last ACK number, window and time sent,
and the list of unacknowledged segments (for the ACK RTT). The flags depend
on that running state, so the evaluation is a sequential pass per direction;
it runs as one compiled loop over the whole table in capture order, with the
state held in arrays indexed by (stream, direction). The definitions follow
Wireshark 4.0 (`tcp_analyze_sequence_number` in packet-tcp.c); documented
differences are in the README.

Flags superseding others, as in Wireshark: a keep-alive is never a
retransmission; a zero-window probe skips the other window checks; a
keep-alive ACK or zero-window-probe ACK is not also a duplicate ACK; an
out-of-order segment is not a retransmission. A fast or spurious
retransmission also carries `retransmission`, as `tcp.analysis.retransmission`
matches them in Wireshark 4.0, while the Info column names only the kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import extend_filled
from tcpwhy.decode.table import ACK, COLUMNS, FIN, RST, SYN, PacketTable, staggered_zeros
from tcpwhy.native import array_types, kernel, njit, tuple_of
from tcpwhy.tcp import ANALYSIS_FLAGS

FLAGS = ANALYSIS_FLAGS
(
    A_RETRANS,
    A_FAST_RETRANS,
    A_SPURIOUS,
    A_OOO,
    A_LOST,
    A_ACK_LOST,
    A_DUP_ACK,
    A_ZERO_WIN,
    A_ZWP,
    A_ZWP_ACK,
    A_WIN_FULL,
    A_WIN_UPDATE,
    A_KEEP_ALIVE,
    A_KEEP_ALIVE_ACK,
    A_REUSED,
) = (1 << i for i in range(len(FLAGS)))

# The Info column prefixes. Wireshark prepends one per flag as it prints them, so they
# read in the reverse of its print order: the last printed comes first.
INFO_PREFIX = (
    (A_ZWP_ACK, "TCP ZeroWindowProbeAck"),
    (A_ZERO_WIN, "TCP ZeroWindow"),
    (A_ZWP, "TCP ZeroWindowProbe"),
    (A_DUP_ACK, ""),  # "TCP Dup ACK <frame>#<n>", built per row
    (A_KEEP_ALIVE_ACK, "TCP Keep-Alive ACK"),
    (A_KEEP_ALIVE, "TCP Keep-Alive"),
    (A_WIN_FULL, "TCP Window Full"),
    (A_WIN_UPDATE, "TCP Window Update"),
    (A_ACK_LOST, "TCP ACKed unseen segment"),
    (A_LOST, "TCP Previous segment not captured"),
    (A_OOO, "TCP Out-Of-Order"),
    (A_SPURIOUS, "TCP Spurious Retransmission"),
    (A_FAST_RETRANS, "TCP Fast Retransmission"),
    (A_RETRANS, "TCP Retransmission"),
    (A_REUSED, "TCP Port numbers reused"),
)

MAX_UNACKED = 10000  # Wireshark's TCP_MAX_UNACKED_SEGMENTS per direction
OOO_DEFAULT_NS = 3_000_000
FAST_RETRANS_NS = 20_000_000


_DIR_STATE = {
    # name: (dtype, initial value) of the per-(stream, direction) state; counts, flags and
    # the (unscaled, 16-bit) window in 32 bits: a flood's half a million conversations
    # hold a million of these rows
    "nextseq": (np.uint32, 0),
    "nextseqtime": (np.int64, 0),
    "maxseqtobeacked": (np.uint32, 0),
    "lastack": (np.uint32, 0),
    "lastacktime": (np.int64, 0),
    "window": (np.uint32, 0xFFFFFFFF),  # none seen yet
    "dupacknum": (np.int32, 0),
    "lastnondup": (np.int64, 0),
    "lastflags": (np.uint32, 0),  # the last packet's analysis bits
    "valid_bif": (np.bool_, True),
    "seg_head": (np.int64, -1),
    "seg_count": (np.int32, 0),
}
_STREAM_STATE = {"mru_syn": (np.int64, 0), "first_rtt": (np.int64, 0), "last_ts": (np.int64, -1)}
_POOL = {
    "pool_seq": (np.uint32, 0),
    "pool_next": (np.uint32, 0),
    "pool_ts": (np.int64, 0),
    "pool_frame": (np.int64, 0),
    "pool_link": (np.int64, -1),
}


def _state_types(spec: dict[str, tuple[Any, int]]) -> str:
    """A state's arrays as one tuple argument's signature words, from their declared types."""
    return tuple_of(array_types({k: (dt, ()) for k, (dt, _) in spec.items()}))


@njit(cache=True, inline="always")
def _gt(a: Any, b: Any) -> Any:
    return np.int32(np.uint32(a) - np.uint32(b)) > 0


@njit(cache=True, inline="always")
def _lt(a: Any, b: Any) -> Any:
    return np.int32(np.uint32(a) - np.uint32(b)) < 0


@njit(cache=True, inline="always")
def _le(a: Any, b: Any) -> Any:
    return np.int32(np.uint32(a) - np.uint32(b)) <= 0


@njit(cache=True, inline="always")
def _free_list(seg_head: Any, seg_count: Any, pool_link: Any, free_head: int, k: Any) -> int:
    """Direction `k`'s unacknowledged segments back to the pool's free list (a new stream on
    the slot, a resent SYN); returns the list's new head."""
    q = seg_head[k]
    while q >= 0:
        nq = pool_link[q]
        pool_link[q] = free_head
        free_head = q
        q = nq
    seg_head[k] = -1
    seg_count[k] = 0
    return free_head


@kernel(
    f"i8[:] i8[:] i8[:] {array_types(COLUMNS, ('seq', 'ack', 'payload_len'))} i8[:] i1[:] "
    f"{array_types(COLUMNS, ('ts_ns',))} i8[:] b1[:] b1[:] {_state_types(_DIR_STATE)} "
    f"{_state_types(_STREAM_STATE)} {_state_types(_POOL)} i8[:] "
    "u4[:] i8[:] i8[:] f8[:] i8[:] f8[:] f8[:] b1[:] -> none",
    nogil=True,
)
def _analyze(
    slot: Any,
    pdir: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    plen: Any,
    win: Any,
    rev_ws: Any,
    ts: Any,
    frame: Any,
    reused: Any,
    new: Any,
    dir_state: Any,
    stream_state: Any,
    pool: Any,
    pool_meta: Any,
    out_flags: Any,
    out_dup: Any,
    out_dupframe: Any,
    out_rtt: Any,
    out_acked: Any,
    out_irtt: Any,
    out_delta: Any,
    out_tree: Any,
) -> None:
    # the state arrays, as `_DIR_STATE`, `_STREAM_STATE` and `_POOL` declare them
    (
        nextseq, nextseqtime, maxseqtobeacked, lastack, lastacktime, window, dupacknum,
        lastnondup, lastflags, valid_bif, seg_head, seg_count,
    ) = dir_state  # fmt: skip
    mru_syn, first_rtt, last_ts = stream_state
    pool_seq, pool_next, pool_ts, pool_frame, pool_link = pool
    n = slot.shape[0]
    # unacknowledged segments: a pool of singly linked lists, newest first; the caller
    # guarantees room for one new segment per row
    free_head = pool_meta[0]
    pool_used = pool_meta[1]
    for i in range(n):
        # state lives per conversation slot; a new stream on the slot starts it afresh
        st = slot[i]
        fw = st * 2 + pdir[i]
        rv = st * 2 + 1 - pdir[i]
        # unsigned copies for indexing: numba then skips its negative-index wraparound
        su, fu, ru = np.uint64(st), np.uint64(fw), np.uint64(rv)
        if new[i]:
            for k in (st * 2, st * 2 + 1):
                nextseq[k] = 0
                nextseqtime[k] = 0
                maxseqtobeacked[k] = 0
                lastack[k] = 0
                lastacktime[k] = 0
                window[k] = 0xFFFFFFFF
                dupacknum[k] = 0
                lastnondup[k] = 0
                lastflags[k] = 0
                valid_bif[k] = True
                free_head = _free_list(seg_head, seg_count, pool_link, free_head, k)
            mru_syn[su] = 0
            first_rtt[su] = 0
            last_ts[su] = -1
        f = flags[i]
        sq = np.uint32(seq[i])
        ak = np.uint32(ack[i])
        sl = np.uint32(plen[i])
        w = win[i]
        t = ts[i]
        a = 0
        if reused[i]:
            # a new stream on the same 4-tuple starts with fresh state (Wireshark's new conversation)
            a |= A_REUSED
        # values used more than once are kept in locals: the compiler cannot tell the
        # arrays apart, so it reloads them after every store
        rtt = np.nan
        acked = 0
        prev_ts = last_ts[su]
        out_delta[i] = 0.0 if prev_ts < 0 else (t - prev_ts) / 1e9
        last_ts[su] = t
        # initial RTT: first segment with ACK and without SYN after a SYN
        if (f & SYN) and not (f & ACK):
            mru_syn[su] = t
        irtt = first_rtt[su]
        if (f & (SYN | ACK)) == ACK and mru_syn[su] != 0 and irtt == 0:
            irtt = t - mru_syn[su]
            if irtt == 0:
                irtt = 1
            first_rtt[su] = irtt
        out_irtt[i] = irtt / 1e9 if irtt != 0 else np.nan
        if f & ACK:
            valid_bif[ru] = True
        skip_fwd = False
        # ZERO WINDOW PROBE
        if sl == 1 and sq == nextseq[fu] and window[ru] == 0:
            a |= A_ZWP
            skip_fwd = True
        if not skip_fwd:
            if w == 0 and (f & (RST | FIN | SYN)) == 0:
                a |= A_ZERO_WIN
            if nextseq[fu] != 0 and _gt(sq, nextseq[fu]) and (f & RST) == 0:
                a |= A_LOST
                valid_bif[fu] = False
            if (
                (sl == 0 or sl == 1)
                and sq == np.uint32(nextseq[fu] - np.uint32(1))
                and (f & (SYN | FIN | RST)) == 0
            ):
                a |= A_KEEP_ALIVE
            if (
                sl == 0
                and w != 0
                and w != window[fu]
                and sq == nextseq[fu]
                and ak == lastack[fu]
                and (f & (SYN | FIN | RST)) == 0
            ):
                a |= A_WIN_UPDATE
            if (
                sl > 0
                and rev_ws[i] != -1
                and np.uint32(sq + sl)
                == np.uint32(
                    lastack[ru] + np.uint32((window[ru] << max(rev_ws[i], 0)) & 0xFFFFFFFF)
                )
                and (f & (SYN | FIN | RST)) == 0
            ):
                a |= A_WIN_FULL
            plain = (
                sl == 0 and sq == nextseq[fu] and ak == lastack[fu] and (f & (SYN | FIN | RST)) == 0
            )
            if plain and w != 0 and w == window[fu] and (lastflags[ru] & A_KEEP_ALIVE):
                a |= A_KEEP_ALIVE_ACK
            elif (
                sl == 0
                and w == 0
                and w == window[fu]
                and sq == nextseq[fu]
                and (ak == lastack[fu] or ak == np.uint32(lastack[fu] + np.uint32(1)))
                and (lastflags[ru] & A_ZWP)
                and (f & (SYN | FIN | RST)) == 0
            ):
                a |= A_ZWP_ACK
            elif plain and w != 0 and w == window[fu]:
                # after an ACK of an unseen segment (-1, below) the count starts again at 1
                dupacknum[fu] = 1 if dupacknum[fu] == -1 else dupacknum[fu] + 1
                a |= A_DUP_ACK
                out_dup[i] = dupacknum[fu]
                out_dupframe[i] = lastnondup[fu]
        # finished_fwd
        if ak != lastack[fu]:
            dupacknum[fu] = 0
            lastnondup[fu] = frame[i]
        beyond = maxseqtobeacked[ru] != 0 and _gt(ak, maxseqtobeacked[ru]) and (f & ACK) != 0
        if beyond:
            # flag once per lost stretch, even while the other side only sends pure ACKs
            if _lt(maxseqtobeacked[ru], nextseq[ru]):
                maxseqtobeacked[ru] = nextseq[ru]
                a |= A_ACK_LOST
            else:
                if dupacknum[ru] == 0:
                    a |= A_ACK_LOST
                dupacknum[ru] = -1
        if sl > 0 or (f & (SYN | FIN)):
            not_adv = nextseq[fu] != 0 and _lt(sq, nextseq[fu])
            # more than one byte starting just below nextseq follows a zero-window probe
            if sl > 1 and np.uint32(nextseq[fu] - np.uint32(1)) == sq:
                not_adv = False
            if (a & A_KEEP_ALIVE) == 0:
                done = False
                # Wireshark's times apart are unsigned: a packet stamped before the one it is
                # measured from (a capture whose time goes back) is not "within" anything
                dt = np.uint64(t - lastacktime[ru])
                # and so is its count: the -1 an ACK of an unseen segment leaves passes "two
                # duplicate ACKs or more"
                dups = np.uint32(dupacknum[ru])
                if not_adv and dups >= 2 and lastack[ru] == sq and dt < np.uint64(FAST_RETRANS_NS):
                    a |= A_FAST_RETRANS | A_RETRANS
                    done = True
                # bytes the receiver had already acknowledged: spurious, whatever the timing
                if (
                    not done
                    and sl > 0
                    and lastack[ru] != 0
                    and _le(np.uint32(sq + sl), lastack[ru])
                ):
                    a |= A_SPURIOUS | A_RETRANS
                    done = True
                if not done:
                    dt = np.uint64(t - nextseqtime[fu])
                    thres = np.uint64(irtt if irtt != 0 else OOO_DEFAULT_NS)
                    # a segment ending exactly at nextseq (SYN and FIN count one) is a resend
                    end = np.uint32(sq + sl + (1 if f & (SYN | FIN) else 0))
                    if not_adv and dt < thres and nextseq[fu] != end:
                        a |= A_OOO
                        done = True
                if not done and not_adv:
                    a |= A_RETRANS
        nxt = np.uint32(sq + sl)
        if (sl > 0 or (f & (SYN | FIN))) and seg_count[fu] < MAX_UNACKED:
            if f & (SYN | FIN):
                nxt = np.uint32(nxt + np.uint32(1))
            if free_head >= 0:
                k = free_head
                free_head = pool_link[k]
            else:
                k = pool_used
                pool_used += 1
            ku = np.uint64(k)  # unsigned, as su, fu and ru above
            pool_seq[ku] = sq
            pool_next[ku] = nxt
            pool_ts[ku] = t
            pool_frame[ku] = frame[i]
            pool_link[ku] = seg_head[fu]
            seg_head[fu] = k
            seg_count[fu] += 1
        if (_gt(nxt, nextseq[fu]) or nextseq[fu] == 0) and (a & A_ZWP) == 0:
            nextseq[fu] = nxt
            nextseqtime[fu] = t
        if (sq == maxseqtobeacked[fu] or maxseqtobeacked[fu] == 0) and (a & A_ZWP) == 0:
            maxseqtobeacked[fu] = nextseq[fu]
        window[fu] = w
        lastack[fu] = ak
        lastacktime[fu] = t
        lastflags[fu] = a
        # remove the segments this ACK covers; an exact match gives the ACK RTT. Wireshark
        # reads the acknowledgment field whether the ACK flag is set or not: a SYN's (or a
        # bare RST's) field, 0 as a rule, drops the segments before 0 in sequence space (a
        # SYN-ACK sent from an initial sequence number above 2**31, for one)
        prev = -1
        k = seg_head[ru]
        while k >= 0:
            nk2 = pool_link[k]
            if ak == pool_next[k]:
                # the oldest matching segment gives the RTT (the list is newest first);
                # Wireshark shows the RTT only when it is not zero
                rtt = (t - pool_ts[k]) / 1e9 if t != pool_ts[k] else np.nan
                acked = pool_frame[k]
            elif _gt(ak, pool_seq[k]) and _le(ak, pool_next[k]):
                pool_seq[k] = ak
                prev = k
                k = nk2
                continue
            elif _gt(pool_next[k], ak):
                prev = k
                k = nk2
                continue
            # acknowledged: unlink and free
            if prev < 0:
                seg_head[ru] = nk2
            else:
                pool_link[prev] = nk2
            pool_link[k] = free_head
            free_head = k
            seg_count[ru] -= 1
            k = nk2
        out_flags[i] = a
        out_rtt[i] = rtt
        out_acked[i] = acked
        # Wireshark's per-packet analysis record exists (and with it the initial RTT field)
        # when a flag is set, a segment is acknowledged, bytes in flight were computed, or
        # the ACK went beyond what the other side was seen to send (flagged or not)
        out_tree[i] = (
            a != 0 or acked != 0 or beyond or (sl > 0 and valid_bif[fu] and seg_head[fu] >= 0)
        )
    pool_meta[0] = free_head
    pool_meta[1] = pool_used


@dataclass
class Analysis:
    """Per-row analysis results; `flags` maps Wireshark's flag names to boolean arrays."""

    bits: npt.NDArray[np.uint32]
    dup_ack_num: npt.NDArray[np.int64]
    dup_ack_frame: npt.NDArray[np.int64]
    ack_rtt: npt.NDArray[np.float64]
    frame_acked: npt.NDArray[np.int64]
    initial_rtt: npt.NDArray[np.float64]
    time_delta: npt.NDArray[np.float64]

    @property
    def flags(self) -> dict[str, npt.NDArray[np.bool_]]:
        return {name: (self.bits & (1 << k)) != 0 for k, name in enumerate(FLAGS)}

    def names(self, row: int) -> list[str]:
        b = int(self.bits[row])
        return [name for k, name in enumerate(FLAGS) if b & (1 << k)]

    def info_prefix(self, row: int) -> str:
        """Wireshark's bracketed Info prefix, e.g. ``[TCP Dup ACK 12#1] ``."""
        b = int(self.bits[row])
        if not b:
            return ""
        if b & (A_SPURIOUS | A_FAST_RETRANS):
            b &= ~A_RETRANS  # the field is set, but Info names only the specific kind
        parts = []
        for bit, text in INFO_PREFIX:
            if b & bit:
                if bit == A_DUP_ACK:
                    text = (
                        f"TCP Dup ACK {int(self.dup_ack_frame[row])}#{int(self.dup_ack_num[row])}"
                    )
                parts.append(f"[{text}] ")
        return "".join(parts)


def _grown(
    arrs: dict[str, npt.NDArray[Any]],
    filled: dict[str, int],
    spec: dict[str, tuple[Any, int]],
    n: int,
) -> None:
    """At least `n` rows of each state array in `spec` set up (`filled`: how many are)."""
    for name, (dt, init) in spec.items():
        have = filled.get(name, 0)
        if have < n:
            old = arrs.get(name, np.empty(0, dt))
            # doubled: room is address space until its rows are set up, and a flood's
            # state grown by a quarter was copied 14 times (0.25 s of its `conns`)
            arrs[name] = extend_filled(old, have, n, init)
            filled[name] = n


class Analyzer:
    """Runs the analysis over chunks fed in capture order, keeping the state between them."""

    def __init__(self, *, reuse: bool = False) -> None:
        """`reuse`: each `feed` writes its outputs into the buffers of the last one (for a
        caller done with an `Analysis` before it feeds the next chunk)."""
        self.state: dict[str, npt.NDArray[Any]] = {}
        self.filled: dict[str, int] = {}  # rows of each state array set up (`_grown`)
        self.pool_meta = np.array([-1, 0], np.int64)
        self.scratch: dict[str, npt.NDArray[Any]] | None = {} if reuse else None

    def feed(self, table: PacketTable, streams: dict[str, npt.NDArray[Any]]) -> Analysis:
        n = len(table)
        # state is kept per conversation slot of the stream tracker, which reuses the slots
        # of conversations it forgot: memory follows the conversations held, not the file
        nslots = int(streams["conv"].max()) + 1 if n else 0
        _grown(self.state, self.filled, _DIR_STATE, 2 * nslots)
        _grown(self.state, self.filled, _STREAM_STATE, nslots)
        _grown(self.state, self.filled, _POOL, int(self.pool_meta[1]) + n)
        return _run(table, streams, self.state, self.pool_meta, self.scratch)


_OUTPUTS = {
    "bits": np.uint32,
    "dup": np.int64,
    "dupframe": np.int64,
    "rtt": np.float64,
    "acked": np.int64,
    "irtt": np.float64,
    "delta": np.float64,
    "tree": np.bool_,
}
_ZEROED = ("dup", "dupframe")
"""The outputs that `_analyze` writes only on some rows (a duplicate ACK's number and frame):
reused buffers are zeroed for them alone. It writes every row of the others, whose zeroing
(53 bytes a row) took 0.027 of the 0.15 s the connection-heavy capture's `conns` spends
on the analysis, on its busiest thread."""
_CAST_INPUTS = ("dir", "flags", "win", "frame")
"""The inputs the kernel takes as int64 that the table and the stream tracker keep narrower."""


def _buffers(
    n: int, scratch: dict[str, npt.NDArray[Any]] | None
) -> tuple[dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    """The outputs of n rows (zeroed; with `scratch`, those of `_ZEROED`) and room for the
    int64 copies of the narrower inputs: fresh (one staggered allocation, see
    `staggered_zeros`), or with `scratch` those of the last call, grown when short. Fresh
    per chunk, they were mapped and zeroed by the kernel anew each time in a process whose
    allocator gives the heap's top back (the library's host: the largest source of page
    faults in `tcpwhy.open(...).connections`)."""
    specs: dict[str, tuple[Any, tuple[int, ...]]] = {k: (dt, (n,)) for k, dt in _OUTPUTS.items()}
    specs.update({f"in_{k}": (np.int64, (n,)) for k in _CAST_INPUTS})
    if scratch is None:
        got = staggered_zeros(specs)
    else:
        if not scratch or len(scratch["bits"]) < n:
            room = max(n, 2 * len(scratch["bits"]) if scratch else 0)
            scratch.clear()
            scratch.update(staggered_zeros({k: (dt, (room,)) for k, (dt, _) in specs.items()}))
        got = {k: v[:n] for k, v in scratch.items()}
        for k in _ZEROED:
            got[k].fill(0)
    return {k: got[k] for k in _OUTPUTS}, {k: got[f"in_{k}"] for k in _CAST_INPUTS}


def analyze(table: PacketTable, streams: dict[str, npt.NDArray[Any]]) -> Analysis:
    """Analysis flags of every row of a whole capture's table (rows in capture order)."""
    return Analyzer().feed(table, streams)


def _run(
    table: PacketTable,
    streams: dict[str, npt.NDArray[Any]],
    state: dict[str, npt.NDArray[Any]],
    pool_meta: npt.NDArray[np.int64],
    scratch: dict[str, npt.NDArray[Any]] | None = None,
) -> Analysis:
    n = len(table)
    out, wide = _buffers(n, scratch)
    bits, dup, dupframe, rtt, acked, irtt, delta, tree = out.values()
    if n:
        for k, src in (
            ("dir", streams["dir"]),
            ("flags", table["flags"]),
            ("win", table["win"]),
            ("frame", table["frame"]),
        ):
            np.copyto(wide[k], src, casting="unsafe")
        _analyze(
            streams["conv"],
            wide["dir"],
            wide["flags"],
            table["seq"],
            table["ack"],
            table["payload_len"],
            wide["win"],
            streams["rev_ws"],
            table["ts_ns"],
            wide["frame"],
            streams["reused"],
            streams["new"],
            *(tuple(state[k] for k in spec) for spec in (_DIR_STATE, _STREAM_STATE, _POOL)),
            pool_meta,
            bits,
            dup,
            dupframe,
            rtt,
            acked,
            irtt,
            delta,
            tree,
        )
        irtt[~tree] = np.nan
    return Analysis(bits, dup, dupframe, rtt, acked, irtt, delta)
