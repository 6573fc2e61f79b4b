"""Conversations and stream numbers, as Wireshark numbers `tcp.stream`, plus relative sequence numbers.

A conversation is the unordered pair of TCP endpoints. Its packets are
numbered into streams in order of first packet; a SYN (without ACK) whose
sequence number differs from the base sequence already seen in its direction
starts a new stream on the same 4-tuple: port reuse (Wireshark's
`tcp.analysis.reused_ports`).

Relative sequence numbers follow Wireshark: the base of a direction is the
SYN's sequence number, or, without a SYN, one less than the first sequence
number seen in that direction, or one less than the first acknowledgment
number the other direction sent -- whichever comes first.

The tracker is incremental: chunks of a streamed capture are fed in order and
state carries over, so `tcpwhy packets -` can print relative numbers live.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from tcpwhy.decode.table import ACK, SYN, PacketTable


def endpoint_keys(t: PacketTable) -> tuple[npt.NDArray[Any], npt.NDArray[np.int8]]:
    """Canonical conversation key per row (bytes of a 5-word row) and the row's direction.

    Direction 0 means the packet goes from the lower endpoint to the higher one.
    """
    n = len(t)
    a = np.empty((n, 3), np.uint64)
    b = np.empty((n, 3), np.uint64)
    a[:, 0], a[:, 1], a[:, 2] = t["src_hi"], t["src_lo"], t["sport"]
    b[:, 0], b[:, 1], b[:, 2] = t["dst_hi"], t["dst_lo"], t["dport"]
    # lexicographic a > b ?
    gt = (a[:, 0] > b[:, 0]) | (
        (a[:, 0] == b[:, 0]) & ((a[:, 1] > b[:, 1]) | ((a[:, 1] == b[:, 1]) & (a[:, 2] > b[:, 2])))
    )
    lo = np.where(gt[:, None], b, a)
    hi = np.where(gt[:, None], a, b)
    key = np.empty((n, 5), np.uint64)
    key[:, 0], key[:, 1] = lo[:, 0], lo[:, 1]
    key[:, 2], key[:, 3] = hi[:, 0], hi[:, 1]
    key[:, 4] = (lo[:, 2] << np.uint64(16)) | hi[:, 2]
    return np.ascontiguousarray(key).view(np.dtype((np.void, 40))).ravel(), gt.astype(np.int8)


@njit(cache=True)
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
) -> int:
    for i in range(slot.shape[0]):
        s = slot[i]
        d = pdir[i]
        r = 1 - d
        f = flags[i]
        reused = False
        if st_stream[s] < 0:
            st_stream[s] = next_stream
            next_stream += 1
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
        if not st_bset[s, d]:
            st_bset[s, d] = True
            if f & SYN:
                st_base[s, d] = seq[i]
            else:
                st_base[s, d] = np.uint32(seq[i] - np.uint32(1))
        if (f & ACK) and not st_bset[s, r]:
            st_bset[s, r] = True
            st_base[s, r] = np.uint32(ack[i] - np.uint32(1))
        # window scaling: in effect only when both SYNs carried the option
        if f & SYN:
            if (f & ACK) == 0:
                st_ws[s, d] = opt_ws[i] if opt_ws[i] >= 0 else -2
            else:
                if opt_ws[i] >= 0 and st_ws[s, r] >= 0:
                    st_ws[s, d] = opt_ws[i]
                else:
                    st_ws[s, d] = -2
                    st_ws[s, r] = -2
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


class StreamTracker:
    """Assigns stream numbers and relative seq/ack to chunks fed in capture order."""

    def __init__(self) -> None:
        self._slots: dict[bytes, int] = {}
        self._cap = 1024
        self.st_stream = np.full(self._cap, -1, np.int64)
        self.st_bset = np.zeros((self._cap, 2), np.bool_)
        self.st_base = np.zeros((self._cap, 2), np.uint32)
        self.st_ws = np.full((self._cap, 2), -1, np.int8)
        self.next_stream = 0

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, self._cap * 2)
        st = np.full(cap, -1, np.int64)
        st[: self._cap] = self.st_stream
        bs = np.zeros((cap, 2), np.bool_)
        bs[: self._cap] = self.st_bset
        ba = np.zeros((cap, 2), np.uint32)
        ba[: self._cap] = self.st_base
        ws = np.full((cap, 2), -1, np.int8)
        ws[: self._cap] = self.st_ws
        self.st_stream, self.st_bset, self.st_base, self.st_ws = st, bs, ba, ws
        self._cap = cap

    def feed(self, t: PacketTable) -> dict[str, npt.NDArray[Any]]:
        """Per-row `stream`, `dir` (0/1 canonical), `rel_seq`, `rel_ack`, `win_scaled`,
        `reused`, `new` (first packet of a stream), `conv` (conversation slot), `rev_ws`
        (the other direction's window scale: -1 unknown, -2 none, else the shift)."""
        n = len(t)
        keys, pdir = endpoint_keys(t)
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        local = np.empty(len(uniq), np.int64)
        slots = self._slots
        # visit keys in order of first appearance so new slots follow capture order
        for u in np.argsort(first, kind="stable"):
            k = uniq[u].tobytes()
            s = slots.get(k)
            if s is None:
                s = len(slots)
                slots[k] = s
            local[u] = s
        self._grow(len(slots))
        slot = local[inv.ravel()]
        out: dict[str, npt.NDArray[Any]] = {
            "stream": np.empty(n, np.int64),
            "rel_seq": np.empty(n, np.uint32),
            "rel_ack": np.empty(n, np.uint32),
            "reused": np.zeros(n, np.bool_),
            "new": np.zeros(n, np.bool_),
            "win_scaled": np.empty(n, np.int64),
            "rev_ws": np.empty(n, np.int8),
        }
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
        )
        out["dir"] = pdir
        out["conv"] = slot
        return out
