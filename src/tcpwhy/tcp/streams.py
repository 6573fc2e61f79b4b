"""Conversations and stream numbers, as Wireshark numbers `tcp.stream`, plus relative sequence numbers.

A conversation is the unordered pair of TCP endpoints. Its packets are
numbered into streams in order of first packet; a SYN (without ACK) whose
sequence number differs from the base sequence already seen in its direction
starts a new stream on the same 4-tuple: port reuse (Wireshark's
`tcp.analysis.reused_ports`). A SYN-ACK whose sequence number differs from its
direction's base (a 4-tuple reused whose new SYN was not captured) stays in its
stream, as in Wireshark, is flagged reused too, and numbers its direction from
itself.

Relative sequence numbers follow Wireshark: the base of a direction is the
SYN's sequence number, or, without a SYN, one less than the first sequence
number seen in that direction, or one less than the first acknowledgment
number the other direction sent -- whichever comes first.

The tracker is incremental: chunks of a streamed capture are fed in order and
state carries over, so `tcpwhy packets -` can print relative numbers live.

ICMP errors about TCP (a table's `icmp` rows) are joined to their connection as
Wireshark joins them: the quoted segment's endpoints find the conversation (an
error about a conversation not seen yet opens a stream of its own, as in
Wireshark), and the error takes that conversation's current stream. A quoted
segment changes nothing of the stream's state (no base sequence number, no port
reuse, no window scale), and its numbers stay absolute: Wireshark shows the
quoted header's raw sequence number as ``tcp.seq``. `StreamTracker.feed` puts
the ICMP rows' stream, direction and conversation in `StreamTracker.icmp_out`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import extend_filled, sparse_zeros
from tcpwhy.decode.table import (
    ACK,
    COLUMNS,
    ENDPOINT_COLUMNS,
    SYN,
    PacketTable,
    staggered_zeros,
)
from tcpwhy.intrinsics import prefetch
from tcpwhy.native import array_types, kernel, njit, tuple_of

_EMPTY = -1
_ENDS = tuple_of(array_types(COLUMNS, ENDPOINT_COLUMNS))  # a row's endpoint columns, as a tuple


@njit(cache=True, inline="always")
def _mix(h: Any, v: Any) -> Any:
    h ^= v + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    return h


@njit(cache=True, inline="always")
def _hash5(k0: Any, k1: Any, k2: Any, k3: Any, k4: Any) -> Any:
    return _mix(_mix(_mix(_mix(_mix(np.uint64(0), k0), k1), k2), k3), k4)


@njit(cache=True, inline="always")
def _pair_key(a0: Any, a1: Any, ap: Any, b0: Any, b1: Any, bp: Any) -> Any:
    """A connection's key, the same both ways: its lower endpoint first, both ports in one
    word; and whether the packet goes from the higher endpoint."""
    a2, b2 = np.uint64(ap), np.uint64(bp)
    gt = a0 > b0 or (a0 == b0 and (a1 > b1 or (a1 == b1 and a2 > b2)))
    if gt:
        return b0, b1, a0, a1, (b2 << np.uint64(16)) | a2, gt
    return a0, a1, b0, b1, (a2 << np.uint64(16)) | b2, gt


@njit(cache=True, inline="always")
def _row_key(ends: Any, i: Any) -> Any:
    """`_pair_key` of row i of the endpoint columns `ends` (`ENDPOINT_COLUMNS`)."""
    src_hi, src_lo, dst_hi, dst_lo, sport, dport = ends
    return _pair_key(src_hi[i], src_lo[i], sport[i], dst_hi[i], dst_lo[i], dport[i])


@kernel(f"{_ENDS} u8[:] i1[:] -> none", nogil=True)
def pair_hashes(ends: Any, out: Any, dirs: Any) -> None:
    """Per row: the 64-bit hash of its connection's key (the stream table's, both directions
    alike) and its direction (1 from the higher endpoint)."""
    for i in range(out.shape[0]):
        k0, k1, k2, k3, k4, gt = _row_key(ends, i)
        out[i] = _hash5(k0, k1, k2, k3, k4)
        dirs[i] = 1 if gt else 0


@kernel("i8[:] i8[:] i4[:] -> none", nogil=True)
def _group_rows(stream: Any, bounds: Any, order: Any) -> None:
    """Counting sort: `bounds` (nstreams + 1, zeroed) gets each stream's first position,
    `order` the rows stream by stream, in row order within a stream."""
    n = bounds.shape[0] - 1
    for i in range(stream.shape[0]):
        bounds[stream[i] + 1] += 1
    for s in range(n):
        bounds[s + 1] += bounds[s]
    fill = bounds[:n].copy()
    for i in range(stream.shape[0]):
        s = stream[i]
        order[fill[s]] = i
        fill[s] += 1


def rows_by_stream(
    stream: npt.NDArray[np.int64], nstreams: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """The rows grouped by stream, in capture order within each (int32 row numbers), and
    where each stream's rows begin in that order (`nstreams + 1` bounds).

    What a stable argsort of the stream ids gives, in one counting pass: the ids are dense
    (0 .. nstreams - 1), and on 4.3 M rows the sort took 0.2 s where this takes 0.015 s."""
    if len(stream) >= 1 << 31:
        raise ValueError("more than 2**31 rows")
    bounds = np.zeros(nstreams + 1, np.int64)
    order = np.empty(len(stream), np.int32)
    _group_rows(np.ascontiguousarray(stream, np.int64), bounds, order)
    return order, bounds


_SLOT = np.int64(0xFFFFFFFF)
_HASH = np.uint64(0x7FFFFFFF)
_PREFETCH_FROM = 1 << 20
"""Table entries (8 MB) from which `_lookup` fetches the entries it will probe ahead."""
_AHEAD = 8
_RING = 16  # a power of two above _AHEAD


@njit(cache=True, inline="always")
def _row_hash(ends: Any, i: Any) -> Any:
    k0, k1, k2, k3, k4, _ = _row_key(ends, i)
    return _hash5(k0, k1, k2, k3, k4)


@kernel(
    f"{_ENDS} i8[:] u8[:,:] u8[:,:] i4[:] i8[:] i8[:] i8[:] i1[:] -> none",
    nogil=True,
)
def _lookup(
    ends: Any,
    tab_val: Any,
    keys: Any,
    keys_hi: Any,
    slot_keys: Any,
    free: Any,
    meta: Any,
    out_slot: Any,
    out_dir: Any,
) -> None:
    """Conversation slot and direction of each row, through an open-addressing hash table.

    The key is the unordered pair of endpoints, written lower endpoint first;
    direction 0 means the packet goes from the lower endpoint to the higher.
    A table entry is the slot in its low 32 bits and the low 31 bits of the key's
    hash above them: most probes that miss never read the key, and the entry's place
    in a table of up to 2**31 entries follows from it alone (`_rehash` reads no key).
    The keys are kept per slot, not per entry: the table is 8 bytes an entry. A slot's key
    is the addresses' low halves and the ports in `keys`, their high halves in `keys_hi`,
    written only where they differ from what the row holds: for IPv4 they are zero, and
    `keys_hi`'s pages, mapped lazily, are never touched (16 of 40 bytes a conversation).
    `meta` holds [entries, next new slot, free slots]; the caller keeps the
    table at most 7/10 full and the slot arrays large enough for every row.
    """
    # unsigned table positions: numba then skips its negative-index wraparound
    mask = np.uint64(tab_val.shape[0] - 1)
    n = out_slot.shape[0]
    # A table beyond the caches (a flood's millions of conversations) has each row wait on
    # a miss of its own: the entry of the row `ahead` rows on is fetched meanwhile, its hash
    # kept until then (3 M-SYN flood, 8 M entries: 0.23-0.31 s -> 0.10 s). A smaller table
    # is left alone: there the second look at the row cost a third more.
    ahead = _AHEAD if tab_val.shape[0] >= _PREFETCH_FROM else 0
    ring = np.empty(_RING, np.uint64)
    for i in range(min(ahead, n)):
        ring[i] = _row_hash(ends, i)
        prefetch(tab_val, ring[i] & mask)
    for i in range(n):
        k0, k1, k2, k3, k4, gt = _row_key(ends, i)
        if ahead:
            h = ring[i & (_RING - 1)]
            a = i + ahead
            if a < n:
                ha = _row_hash(ends, a)
                ring[a & (_RING - 1)] = ha
                prefetch(tab_val, ha & mask)
        else:
            h = _hash5(k0, k1, k2, k3, k4)
        fp = np.int64(h & _HASH)
        j = h & mask
        while True:
            v = tab_val[j]
            if v == _EMPTY:
                if meta[2] > 0:
                    meta[2] -= 1
                    s = free[meta[2]]
                else:
                    s = meta[1]
                    meta[1] += 1
                tab_val[j] = (fp << np.int64(32)) | s
                keys[s, 0], keys[s, 1], keys[s, 2] = k1, k3, k4
                if keys_hi[s, 0] != k0:
                    keys_hi[s, 0] = k0
                if keys_hi[s, 1] != k2:
                    keys_hi[s, 1] = k2
                slot_keys[s] = j
                meta[0] += 1
                break
            if v >= 0 and (v >> np.int64(32)) == fp:
                s = v & _SLOT
                if (
                    keys[s, 0] == k1
                    and keys[s, 1] == k3
                    and keys[s, 2] == k4
                    and keys_hi[s, 0] == k0
                    and keys_hi[s, 1] == k2
                ):
                    break
            j = (j + np.uint64(1)) & mask
        out_slot[i] = s
        out_dir[i] = 1 if gt else 0


@kernel("i8[:] i8[:] i4[:] -> i8", nogil=True)
def _rehash(old_val: Any, tab_val: Any, slot_keys: Any) -> int:
    """Move live entries into another table; forgotten ones (tombstones) are dropped."""
    mask = tab_val.shape[0] - 1
    n = 0
    for j in range(old_val.shape[0]):
        v = old_val[j]
        if v < 0:
            continue
        q = (v >> np.int64(32)) & mask
        while tab_val[q] != _EMPTY:
            q = (q + 1) & mask
        tab_val[q] = v
        slot_keys[v & _SLOT] = q
        n += 1
    return n


@kernel(
    f"i8[:] i1[:] {array_types(COLUMNS, ('flags', 'seq', 'ack'))} i8[:] b1[:,:] u4[:,:] i1[:,:] "
    f"{array_types(COLUMNS, ('opt_ws', 'win'))} "
    "i8 i8[:] u4[:] u4[:] b1[:] b1[:] i8[:] i1[:] b1[:] i1[:] -> i8",
    nogil=True,
)
def _track(
    slot: Any,
    pdir: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    st_stream: Any,
    st_bset: Any,
    st_base: Any,
    st_ws: Any,
    opt_ws: Any,
    win: Any,
    next_stream: int,
    out_stream: Any,
    out_rseq: Any,
    out_rack: Any,
    out_reused: Any,
    out_new: Any,
    out_win: Any,
    out_rev_ws: Any,
    st_fresh: Any,
    is_icmp: Any,
) -> int:
    """Per row: stream number, relative numbers, scaled window. `is_icmp` (empty when the
    chunk has no ICMP rows) marks ICMP errors' quoted segments (1; 2 for a quote that stops
    before the end of the TCP header), which only look their stream up: a whole header
    opens one if needed (`st_fresh` then says no TCP packet of it was seen yet), a cut one
    never does (stream -1), as in Wireshark."""
    icmp = is_icmp.shape[0] > 0
    for i in range(slot.shape[0]):
        # unsigned indices: numba then skips its negative-index wraparound
        s = np.uint64(slot[i])
        d = np.uint64(pdir[i])
        r = np.uint64(1 - pdir[i])
        f = flags[i]
        reused = False
        if icmp and is_icmp[i]:
            if st_stream[s] < 0 and is_icmp[i] == 1:
                st_stream[s] = next_stream
                next_stream += 1
                st_fresh[s] = True
            out_stream[i] = st_stream[s]
            out_rseq[i] = seq[i]
            out_rack[i] = ack[i]
            out_win[i] = win[i]
            out_rev_ws[i] = st_ws[s, r]
            out_new[i] = False
            out_reused[i] = False
            continue
        if st_stream[s] < 0:
            st_stream[s] = next_stream
            next_stream += 1
            out_new[i] = True
        elif st_fresh[s]:
            st_fresh[s] = False
            out_new[i] = True
        elif (f & (SYN | ACK)) == SYN and st_bset[s, d] and seq[i] != st_base[s, d]:
            st_stream[s] = next_stream
            next_stream += 1
            st_bset[s, 0] = False
            st_bset[s, 1] = False
            st_ws[s, 0] = -1
            st_ws[s, 1] = -1
            reused = True
            out_new[i] = True
        elif (f & (SYN | ACK)) == (SYN | ACK) and st_bset[s, d] and seq[i] != st_base[s, d]:
            st_base[s, d] = seq[i]
            reused = True
        if not st_bset[s, d]:
            st_bset[s, d] = True
            if f & SYN:
                st_base[s, d] = seq[i]
            else:
                st_base[s, d] = np.uint32(seq[i] - np.uint32(1))
        if (f & ACK) and not st_bset[s, r]:
            st_bset[s, r] = True
            st_base[s, r] = np.uint32(ack[i] - np.uint32(1))
        # window scaling, as Wireshark verifies it at each SYN: a side's shift is its SYN's
        # option (-1 while unknown); a SYN or SYN-ACK without one turns scaling off both
        # ways (-2), and so does a SYN-ACK's option after a SYN seen without. A SYN-ACK
        # with the option whose SYN was not captured keeps its shift: the SYN had one, or
        # the SYN-ACK could not carry it (RFC 7323)
        if f & SYN:
            if opt_ws[i] >= 0:
                st_ws[s, d] = opt_ws[i]
            if st_ws[s, d] == -1:
                st_ws[s, d] = -2
                st_ws[s, r] = -2
            elif (f & ACK) and st_ws[s, r] == -2:
                st_ws[s, d] = -2
            out_win[i] = win[i]
        elif st_ws[s, d] >= 0:
            out_win[i] = np.int64(win[i]) << np.int64(min(st_ws[s, d], 14))
        else:
            out_win[i] = win[i]
        out_rev_ws[i] = st_ws[s, r]
        out_stream[i] = st_stream[s]
        out_rseq[i] = np.uint32(seq[i] - st_base[s, d])
        if (f & ACK) == 0:
            out_rack[i] = 0
        else:
            out_rack[i] = np.uint32(ack[i] - st_base[s, r])
        out_reused[i] = reused
    return next_stream


@kernel("i8[:] i8[:] i4[:] i8[:] b1[:,:] i1[:,:] b1[:] i8[:] i8[:] -> none", nogil=True)
def _forget(
    conv: Any,
    tab_val: Any,
    slot_keys: Any,
    st_stream: Any,
    st_bset: Any,
    st_ws: Any,
    st_fresh: Any,
    free: Any,
    meta: Any,
) -> None:
    """`StreamTracker.forget` of the slots `conv` (ascending; repeats, slots never opened and
    slots already free are passed over): each table entry becomes a tombstone, the slot's
    state is reset and the slot goes on the free list. One loop instead of a dozen numpy
    steps: the 1,300 calls of a 3 M-SYN flood's evictions took 0.37 s, now 0.23 s, of
    which this loop 0.1 s (profiled)."""
    nfree = meta[2]
    for i in range(conv.shape[0]):
        c = conv[i]
        if c < 0 or c >= meta[1] or slot_keys[c] < 0:
            continue
        tab_val[slot_keys[c]] = -2  # tombstone: probing goes on past it
        slot_keys[c] = -1
        st_stream[c] = -1
        st_bset[c, 0] = False
        st_bset[c, 1] = False
        st_ws[c, 0] = -1
        st_ws[c, 1] = -1
        st_fresh[c] = False
        free[nfree] = c
        nfree += 1
    meta[2] = nfree


_NO_ICMP = np.zeros(0, np.int8)
_TRACK_COLUMNS = (
    "src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "flags", "seq", "ack", "opt_ws",
    "win", "frame",
)  # fmt: skip


class StreamTracker:
    """Assigns stream numbers and relative seq/ack to chunks fed in capture order."""

    def __init__(self) -> None:
        self._tab_val = np.full(1 << 12, _EMPTY, np.int64)
        self._meta = np.zeros(3, np.int64)  # entries (incl. forgotten), next new slot, free slots
        self._cap = 0
        self.expect = 0
        """Conversations the owner expects at most (0: unknown): the slot arrays get room
        for that many at once, as address space (`extend_filled`), instead of growing."""
        # per slot: its entry in the table (tables have at most 2**31 entries, `_lookup`)
        self._slot_keys = np.zeros(0, np.int32)
        # per slot: its conversation's key, the high halves of the addresses apart (`_lookup`)
        self._keys = np.zeros((0, 3), np.uint64)
        self._keys_hi = np.zeros((0, 2), np.uint64)
        # slots forgotten, free for reuse (the first `_meta[2]` of them)
        self._free = np.zeros(0, np.int64)
        self.st_stream = np.zeros(0, np.int64)
        self.st_bset = np.zeros((0, 2), np.bool_)
        self.st_base = np.zeros((0, 2), np.uint32)
        self.st_ws = np.zeros((0, 2), np.int8)
        self.st_fresh = np.zeros(0, np.bool_)
        self.next_stream = 0
        self.icmp_out: dict[str, npt.NDArray[Any]] | None = None
        """`stream`, `dir`, `conv` (as `feed` gives them) of the ICMP rows of the last table
        fed, None if it had none."""

    @property
    def conversations(self) -> int:
        """Conversations currently held (forgotten ones excluded)."""
        return int(self._meta[1] - self._meta[2])

    def _reserve(self, rows: int) -> None:
        """Room for `rows` new conversations: slot arrays and a table at most 7/10 full.

        The slot arrays grow by a quarter (the builder bounds the conversations held, so a
        doubling would mostly stay unused) and the table's load, tombstones included, stays
        below 0.7, where linear probing is still short."""
        need = int(self._meta[1]) + rows
        if need > self._cap:
            cap = max(need, self._cap + self._cap // 4, 1024)

            def grow(a: npt.NDArray[Any], fill: Any) -> npt.NDArray[Any]:
                return extend_filled(a, self._cap, cap, fill, room=self.expect)

            self.st_stream = grow(self.st_stream, -1)
            self.st_bset = grow(self.st_bset, False)
            self.st_base = grow(self.st_base, 0)
            self.st_ws = grow(self.st_ws, -1)
            self.st_fresh = grow(self.st_fresh, False)
            self._slot_keys = grow(self._slot_keys, -1)
            self._keys = grow(self._keys, 0)
            if cap > len(self._keys_hi):
                # zeros, never written (`sparse_zeros`): an IPv4 capture touches none of them
                hi = sparse_zeros(
                    (max(cap, 2 * len(self._keys_hi), self.expect, 1024), 2), np.uint64
                )
                old = self._keys_hi[: self._cap]
                np.copyto(hi[: self._cap], old, where=old != 0)  # zeros are there already
                self._keys_hi = hi
            self._cap = cap
        size = self._tab_val.shape[0]
        if 10 * (int(self._meta[0]) + rows) > 7 * size:
            while 10 * (self.conversations + rows) > 7 * size:
                size *= 2
            val = self._tab_val
            self._tab_val = np.full(size, _EMPTY, np.int64)
            self._meta[0] = _rehash(val, self._tab_val, self._slot_keys)

    def forget(self, conv: npt.NDArray[Any]) -> None:
        """Drop finished conversations (their slots are reused): bounds memory on huge captures.

        A later packet of a forgotten conversation starts a new stream.
        """
        conv = np.sort(np.asarray(conv, np.int64))  # freed in slot order, whoever lists them
        if not conv.size:
            return
        nfree = int(self._meta[2])
        if nfree + conv.size > len(self._free):
            # sized by the slots listed, not by all: most captures forget none
            grown = np.zeros(
                max(nfree + conv.size, len(self._free) + len(self._free) // 4), np.int64
            )
            grown[:nfree] = self._free[:nfree]
            self._free = grown
        _forget(
            conv,
            self._tab_val,
            self._slot_keys,
            self.st_stream,
            self.st_bset,
            self.st_ws,
            self.st_fresh,
            self._free,
            self._meta,
        )

    def feed(self, t: PacketTable) -> dict[str, npt.NDArray[Any]]:
        """Per-row `stream`, `dir` (0/1 canonical), `rel_seq`, `rel_ack`, `win_scaled`,
        `reused` (a SYN starting a new stream on its 4-tuple, or a SYN-ACK numbering its
        direction anew), `new` (first packet of a stream), `conv` (conversation slot), `rev_ws`
        (the other direction's window scale: -1 unknown, -2 none, else the shift)."""
        icmp = t.icmp
        if icmp is not None and len(icmp):
            return self._feed_with_icmp(t, icmp)
        self.icmp_out = None
        return self._feed(t, _NO_ICMP)

    def _feed_with_icmp(self, t: PacketTable, icmp: PacketTable) -> dict[str, npt.NDArray[Any]]:
        """TCP and ICMP rows merged in capture order (`icmp_at`), fed as one table."""
        n, m = len(t), len(icmp)
        key = np.concatenate([2 * np.arange(n, dtype=np.int64) + 1, 2 * icmp["icmp_at"]])
        order = np.argsort(key, kind="stable")
        cols = {c: np.concatenate([t[c], icmp[c]])[order] for c in _TRACK_COLUMNS}
        kind = np.concatenate([np.zeros(n, np.int8), np.where(icmp["doff"] > 0, 1, 2)])
        is_icmp = kind[order].astype(np.int8)
        out = self._feed(PacketTable(cols), is_icmp)
        back = np.empty(n + m, np.int64)
        back[order] = np.arange(n + m)
        tcp_pos, icmp_pos = back[:n], back[n:]
        self.icmp_out = {k: out[k][icmp_pos] for k in ("stream", "dir", "conv")}
        return {k: v[tcp_pos] for k, v in out.items()}

    def _feed(self, t: PacketTable, is_icmp: npt.NDArray[np.int8]) -> dict[str, npt.NDArray[Any]]:
        n = len(t)
        self._reserve(n)
        # one staggered allocation for this chunk's outputs (see `staggered_zeros`)
        out = staggered_zeros(
            {
                "stream": (np.int64, (n,)),
                "rel_seq": (np.uint32, (n,)),
                "rel_ack": (np.uint32, (n,)),
                "reused": (np.bool_, (n,)),
                "new": (np.bool_, (n,)),
                "win_scaled": (np.int64, (n,)),
                "rev_ws": (np.int8, (n,)),
                "dir": (np.int8, (n,)),
                "conv": (np.int64, (n,)),
            }
        )
        slot = out["conv"]
        pdir = out["dir"]
        _lookup(
            t.endpoints(),
            self._tab_val,
            self._keys,
            self._keys_hi,
            self._slot_keys,
            self._free,
            self._meta,
            slot,
            pdir,
        )
        self.next_stream = _track(
            slot,
            pdir,
            t["flags"],
            t["seq"],
            t["ack"],
            self.st_stream,
            self.st_bset,
            self.st_base,
            self.st_ws,
            t["opt_ws"],
            t["win"],
            self.next_stream,
            out["stream"],
            out["rel_seq"],
            out["rel_ack"],
            out["reused"],
            out["new"],
            out["win_scaled"],
            out["rev_ws"],
            self.st_fresh,
            is_icmp,
        )
        return out
