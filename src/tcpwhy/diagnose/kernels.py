"""Compiled passes of the diagnosis context (`tcpwhy.diagnose.context.Capture`) and rules.

The capture's per-stream columns are made once for every rule: counts per stream and
side, and each stream's endpoints. In numpy each was a dozen passes over the rows or the
streams, with a capture-sized temporary per pass (a 3 M-SYN flood: 0.3 s for the counts
and 0.35 s for the endpoints, of an `analyze` of 2.8 s); here each is one pass writing
only its results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.decode.table import ACK, COLUMNS, ENDPOINT_COLUMNS, FIN, RST, SYN
from tcpwhy.native import array_types, kernel, njit, tuple_of

_KIND = SYN | ACK | RST


@njit(cache=True, inline="always")
def _count_sides(flags: Any, plen: Any, stream: Any, side: Any, counts: Any) -> None:
    """Adds each row to its stream and side (index ``stream * 2 + side``) in `counts`, six
    arrays: every packet, SYNs (SYN alone of SYN, ACK, RST), SYN-ACKs, FINs without RST,
    resets, and segments with payload that are not resets. Six arrays, not one block: each
    is under the size the allocator maps fresh (`tcpwhy.cli` sets it), so they reuse the
    heap the reading left resident (one block of a flood's six was 100 MB more at the
    peak)."""
    packets, syn, synack, fin, rst, data = counts
    for i in range(stream.shape[0]):
        k = stream[i] * 2 + side[i]
        f = flags[i]
        packets[k] += 1
        kind = f & _KIND
        if kind == SYN:
            syn[k] += 1
        elif kind == SYN | ACK:
            synack[k] += 1
        if f & RST:
            rst[k] += 1
        else:
            if f & FIN:
                fin[k] += 1
            if plen[i] > 0:
                data[k] += 1


_SIDES = f"{array_types(COLUMNS, ('flags', 'payload_len'))} i8[:] i1[:]"


# an ahead-of-time entry point has one signature: one for each width of the counts
@kernel(f"{_SIDES} {tuple_of(' '.join(['i4[:]'] * 6))} -> none", nogil=True)
def side_counts(flags: Any, plen: Any, stream: Any, side: Any, counts: Any) -> None:
    """`_count_sides` into int32 counts."""
    _count_sides(flags, plen, stream, side, counts)


@kernel(f"{_SIDES} {tuple_of(' '.join(['i2[:]'] * 6))} -> none", nogil=True)
def side_counts16(flags: Any, plen: Any, stream: Any, side: Any, counts: Any) -> None:
    """`_count_sides` into int16 counts: half the memory where no stream is long."""
    _count_sides(flags, plen, stream, side, counts)


_ENDS = f"i8[:] i1[:] i1 {tuple_of(array_types(COLUMNS, ENDPOINT_COLUMNS))}"
"""The signature words of the endpoint kernels' inputs: each stream's first row, each row's
side, the side of the client, and the rows' endpoint columns (one tuple)."""


@kernel(f"{_ENDS} -> i8", nogil=True)
def varying_endpoints(first: Any, side: Any, client: int, ends: Any) -> int:
    """Which of the five endpoint columns (client address high and low halves, server
    address high and low, server port) differ between streams, as bits 0 to 4: the ones
    that do not are held as one value (the high halves of IPv4 addresses, a flood's one
    server), so they are never written per stream."""
    src_hi, src_lo, dst_hi, dst_lo, sport, dport = ends
    n = first.shape[0]
    if n == 0:
        return 0
    r = first[0]
    if side[r] == client:
        a0, a1, a2, a3, a4 = src_hi[r], src_lo[r], dst_hi[r], dst_lo[r], dport[r]
    else:
        a0, a1, a2, a3, a4 = dst_hi[r], dst_lo[r], src_hi[r], src_lo[r], sport[r]
    bits = 0
    # plain branches: the same written with a helper returning the five as a tuple took four
    # to seven times as long (numba; with the bits as int(b != a) << i, ten times)
    for s in range(1, n):
        r = first[s]
        if side[r] == client:
            b0, b1, b2, b3, b4 = src_hi[r], src_lo[r], dst_hi[r], dst_lo[r], dport[r]
        else:
            b0, b1, b2, b3, b4 = dst_hi[r], dst_lo[r], src_hi[r], src_lo[r], sport[r]
        if b0 != a0:
            bits |= 1
        if b1 != a1:
            bits |= 2
        if b2 != a2:
            bits |= 4
        if b3 != a3:
            bits |= 8
        if b4 != a4:
            bits |= 16
    return bits


@kernel(f"{_ENDS} u8[:] u8[:] u8[:] u8[:] i8[:] -> none", nogil=True)
def stream_endpoints(
    first: Any, side: Any, client: int, ends: Any,
    c_hi: Any, c_lo: Any, s_hi: Any, s_lo: Any, s_port: Any,
) -> None:  # fmt: skip
    """Per stream, from its first row (`first`) and the side that row came from: the
    client's address, the server's address and port. An output of one element takes the
    first stream's value only (a column `varying_endpoints` found the same for all)."""
    src_hi, src_lo, dst_hi, dst_lo, sport, dport = ends
    n0, n1, n2, n3, n4 = c_hi.shape[0], c_lo.shape[0], s_hi.shape[0], s_lo.shape[0], s_port.shape[0]
    for s in range(first.shape[0]):
        r = first[s]
        if side[r] == client:
            b0, b1, b2, b3, b4 = src_hi[r], src_lo[r], dst_hi[r], dst_lo[r], dport[r]
        else:
            b0, b1, b2, b3, b4 = dst_hi[r], dst_lo[r], src_hi[r], src_lo[r], sport[r]
        if s < n0:
            c_hi[s] = b0
        if s < n1:
            c_lo[s] = b1
        if s < n2:
            s_hi[s] = b2
        if s < n3:
            s_lo[s] = b3
        if s < n4:
            s_port[s] = b4


_ROW_ENDS = tuple_of(array_types(COLUMNS, ENDPOINT_COLUMNS))


@kernel(f"i8[:] i1[:] i8 {_ROW_ENDS} {_ROW_ENDS} -> b1", nogil=True)
def endpoints_agree(stream: Any, pdir: Any, nstreams: int, rows: Any, held: Any) -> bool:
    """Whether every row's endpoint columns (`rows`) are its stream's (`held`, per stream,
    as the stream's direction-0 rows carry them; swapped on the other direction's rows),
    every stream below `nstreams`. One pass that stops at the first row that differs: in
    numpy it was two gathers, a choice and a comparison per column, 0.16 s of the reading
    of a capture of 4.3 M packets, on the thread that reading waits for."""
    src_hi, src_lo, dst_hi, dst_lo, sport, dport = rows
    h_src_hi, h_src_lo, h_dst_hi, h_dst_lo, h_sport, h_dport = held
    for i in range(stream.shape[0]):
        s = stream[i]
        if s < 0 or s >= nstreams:
            return False
        # the endpoint the row comes from and the one it goes to, as held
        if pdir[i] == 0:
            f_hi, f_lo, f_port, t_hi, t_lo, t_port = (
                h_src_hi[s], h_src_lo[s], h_sport[s], h_dst_hi[s], h_dst_lo[s], h_dport[s]
            )  # fmt: skip
        else:
            f_hi, f_lo, f_port, t_hi, t_lo, t_port = (
                h_dst_hi[s], h_dst_lo[s], h_dport[s], h_src_hi[s], h_src_lo[s], h_sport[s]
            )  # fmt: skip
        if (
            src_hi[i] != f_hi or src_lo[i] != f_lo or sport[i] != f_port
            or dst_hi[i] != t_hi or dst_lo[i] != t_lo or dport[i] != t_port
        ):  # fmt: skip
            return False
    return True


@kernel(
    f"i8[:] i1[:] {array_types(COLUMNS, ('flags', 'seq', 'ack'))} u4[:] u4[:] i4[:] i8"
    " u4[:,:] i4[:] -> none",
    nogil=True,
)
def stream_bases(
    stream: Any, pdir: Any, flags: Any, seq: Any, ack: Any,
    rel_seq: Any, rel_ack: Any, conv: Any, block: int, base: Any, conv_out: Any,
) -> None:  # fmt: skip
    """Per stream, each direction's sequence base (a row's seq less its relative seq; an
    ACK's ack less its relative ack, for the other direction) and its conversation, written
    as the rows come, `block` rows at a time: in each block the ACKs' bases first, then the
    rows' own, so a stream's base is what numpy's assignments of the two in turn left (one
    value per stream and direction anyway, `StreamConstants`)."""
    n = stream.shape[0]
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        for i in range(lo, hi):
            if flags[i] & ACK:
                base[stream[i], 1 - pdir[i]] = np.uint32(ack[i] - rel_ack[i])
        for i in range(lo, hi):
            base[stream[i], pdir[i]] = np.uint32(seq[i] - rel_seq[i])
            conv_out[stream[i]] = conv[i]


# -- syn-flood: a flood's millions of half-open streams, in passes that allocate nothing of
# their size. In numpy each fact was a gather of every member (24 MB for 3 million) and a
# reduction, a dozen of them per flood, and most of the rule's time was the kernel zeroing
# the pages of those temporaries (`tcpwhy.diagnose.syn_flood`).

_NS = 1_000_000_000
_NO_OVERFLOW_S = (1 << 63) // _NS - 1  # seconds whose nanoseconds (and one more) fit int64


_SPREAD = 1 << 16
"""Seconds from which the passes below count per second by a sort rather than in an array
of one count per second: where the seconds span more than this and more than the values
(one packet stamped decades off would make that array one count per second between)."""


@njit(cache=True)
def _runs(secs: Any) -> tuple[Any, Any]:
    """Each second that `secs` holds, ascending, and how many times, by a sort."""
    n = secs.shape[0]
    ordered = np.sort(secs)
    u = np.empty(n, np.int64)
    c = np.empty(n, np.int64)
    g = 0
    i = 0
    while i < n:
        j = i
        while j < n and ordered[j] == ordered[i]:
            j += 1
        u[g] = ordered[i]
        c[g] = j - i
        g += 1
        i = j
    return u[:g], c[:g]


@kernel("i8[:] i8[:] i8 i8 i8[:] i8[:] -> i8", nogil=True)
def flood_window(
    first_ns: Any, sids: Any, start_ns: int, min_rate: int, members: Any, window: Any
) -> int:
    """The seconds of the capture (from `start_ns`) in which at least `min_rate` of the
    streams `sids` began: the first and last of them into `window`, and into `members` the
    streams of `sids` that began from the one to the other, in order; how many, or -1 if no
    second holds `min_rate`."""
    n = sids.shape[0]
    if n == 0:
        return -1
    t_lo, t_hi = first_ns[sids[0]], first_ns[sids[0]]
    for i in range(n):
        t_lo = min(t_lo, first_ns[sids[i]])
        t_hi = max(t_hi, first_ns[sids[i]])
    lo, hi = (t_lo - start_ns) // _NS, (t_hi - start_ns) // _NS
    if hi - lo < max(n, _SPREAD):
        counts = np.zeros(hi - lo + 1, np.int64)
        for i in range(n):
            counts[(first_ns[sids[i]] - start_ns) // _NS - lo] += 1
        hot = np.flatnonzero(counts >= min_rate)
        if not len(hot):
            return -1
        window[0], window[1] = hot[0] + lo, hot[-1] + lo
    else:
        secs = np.empty(n, np.int64)
        for i in range(n):
            secs[i] = (first_ns[sids[i]] - start_ns) // _NS
        u, c = _runs(secs)
        hot = np.flatnonzero(c >= min_rate)
        if not len(hot):
            return -1
        window[0], window[1] = u[hot[0]], u[hot[-1]]
    m = 0
    if window[1] < _NO_OVERFLOW_S:
        # the window's seconds as times from `start_ns`: one subtraction a stream, not a
        # division ([first, last + 1) seconds holds exactly the times of those seconds)
        a, b = window[0] * _NS, (window[1] + 1) * _NS
        for i in range(n):
            s = sids[i]
            if a <= first_ns[s] - start_ns < b:
                members[m] = s
                m += 1
        return m
    for i in range(n):
        s = sids[i]
        if window[0] <= (first_ns[s] - start_ns) // _NS <= window[1]:
            members[m] = s
            m += 1
    return m


@kernel(
    f"i8[:] {array_types(COLUMNS, ('flags',))} i1[:] {array_types(COLUMNS, ('ts_ns',))}"
    " b1[:] i1 i8 i8[:] -> none",
    nogil=True,
)
def member_syns(
    stream: Any, flags: Any, side: Any, ts_ns: Any, member: Any, client: int, start_ns: int,
    out: Any,
) -> None:  # fmt: skip
    """The client's SYNs (SYN alone of SYN, ACK, RST) in the streams `member` marks: how many,
    the first and last time, and the most begun in one second of the capture (from
    `start_ns`), into `out`; all zero if none."""
    n = stream.shape[0]
    count = 0
    lo, hi = np.int64(0), np.int64(0)
    for i in range(n):
        if member[stream[i]] and side[i] == client and (flags[i] & _KIND) == SYN:
            t = ts_ns[i]
            if count == 0:
                lo, hi = t, t
            else:
                lo = min(lo, t)
                hi = max(hi, t)
            count += 1
    out[0], out[1], out[2], out[3] = count, lo, hi, 0
    if count == 0:
        return
    s_lo, s_hi = (lo - start_ns) // _NS, (hi - start_ns) // _NS
    small = s_hi - s_lo < max(count, _SPREAD)
    counts = np.zeros(s_hi - s_lo + 1 if small else 0, np.int64)
    secs = np.empty(0 if small else count, np.int64)
    k = 0
    for i in range(n):
        if member[stream[i]] and side[i] == client and (flags[i] & _KIND) == SYN:
            sec = (ts_ns[i] - start_ns) // _NS
            if small:
                counts[sec - s_lo] += 1
            else:
                secs[k] = sec
                k += 1
    out[3] = counts.max() if small else _runs(secs)[1].max()


@kernel("i8[:] i8[:] i8[:] i8 i8[:] i8[:] -> i8", nogil=True)
def earliest(first_ns: Any, last_ns: Any, sids: Any, n: int, pos: Any, span: Any) -> int:
    """The positions in `sids` of the `n` streams that began first, in order (equal times in
    the order of `sids`: a stable sort's first n), into `pos`, how many; and the first
    stream's start and the last one's end (`span`). One pass keeping n in order, not a
    sort or a partition of every time."""
    m = sids.shape[0]
    if m == 0:
        return 0
    times = np.empty(max(n, 1), np.int64)
    k = 0
    lo, hi = first_ns[sids[0]], last_ns[sids[0]]
    for i in range(m):
        t = first_ns[sids[i]]
        lo = min(lo, t)
        hi = max(hi, last_ns[sids[i]])
        if k == n and (n == 0 or t >= times[n - 1]):
            continue  # not among the first n (an equal time came earlier in `sids`)
        j = k if k < n else n - 1
        while j > 0 and times[j - 1] > t:
            times[j] = times[j - 1]
            pos[j] = pos[j - 1]
            j -= 1
        times[j] = t
        pos[j] = i
        k = min(k + 1, n)
    span[0], span[1] = lo, hi
    return k


@njit(cache=True, inline="always")
def _member_answers(
    members: Any, synack: Any, rst: Any, pkts: Any, syn: Any, client: int, out: Any
) -> None:
    server = 1 - client
    answered = reset = silent = syn_again = client_rst = 0
    for i in range(members.shape[0]):
        s = members[i]
        if synack[s, server] > 0:
            answered += 1
        elif rst[s, server] > 0:
            reset += 1
        if pkts[s, server] == 0:
            silent += 1
        if syn[s, client] > 1:
            syn_again += 1
        if rst[s, client] > 0:
            client_rst += 1
    out[0], out[1], out[2], out[3], out[4] = answered, reset, silent, syn_again, client_rst


@kernel("i8[:] i4[:,:] i4[:,:] i4[:,:] i4[:,:] i1 i8[:] -> none", nogil=True)
def member_answers(
    members: Any, synack: Any, rst: Any, pkts: Any, syn: Any, client: int, out: Any
) -> None:
    """Of the streams `members`, how many the server answered with a SYN-ACK, with a RST and
    no SYN-ACK, not at all; how many the client sent more than one SYN, and a RST (into
    `out`); over the int32 counts of `side_counts`."""
    _member_answers(members, synack, rst, pkts, syn, client, out)


@kernel("i8[:] i2[:,:] i2[:,:] i2[:,:] i2[:,:] i1 i8[:] -> none", nogil=True)
def member_answers16(
    members: Any, synack: Any, rst: Any, pkts: Any, syn: Any, client: int, out: Any
) -> None:
    """`member_answers` over the int16 counts of `side_counts16`."""
    _member_answers(members, synack, rst, pkts, syn, client, out)
