"""Facts about opening handshakes shared by refused, syn-timeout and accept-queue-overflow."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays import unique_sorted
from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose.common import first_positions
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture, Conn
from tcpwhy.diagnose.registry import Claim, Diag


def unanswered_syn_streams(diag: Diag) -> list[int]:
    """Streams whose client sent SYNs and the server sent nothing at all, less those a flood
    or scan claimed (syn_flood runs first: one finding for them, not one each)."""
    cap = diag.cap
    if not cap.nstreams:
        return []
    # a client that sent anything but SYNs got an answer the capture missed (one-way capture)
    m = (cap.n_syn[:, CLIENT] > 0) & (cap.n_pkts[:, SERVER] == 0)
    m &= cap.n_pkts[:, CLIENT] == cap.n_syn[:, CLIENT]
    m &= ~diag.claimed_mask(Claim.SYN)
    return [int(s) for s in np.flatnonzero(m)]


def syn_rows(c: Conn) -> list[int]:
    return [
        i for i in range(c.n) if c.side[i] == CLIENT and (c.flags[i] & (SYN | ACK | RST)) == SYN
    ]


def first_syn_positions(cap: Capture, sids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per stream of `sids`, the position (in `cap.order`) of the first of its `syn_rows`,
    or -1: the same SYNs for every candidate stream at once, on the stream-ordered columns
    the rules share (`Capture.in_order`)."""
    side, flags = cap.in_order("side"), cap.in_order("flags")
    return first_positions(cap, sids, (side == CLIENT) & ((flags & (SYN | ACK | RST)) == SYN))


def ladder(c: Conn, rows: list[int]) -> list[float]:
    """Seconds of each transmission after the first."""
    return [round(c.dt(rows[0], i), 3) for i in rows]


def ladder_text(offsets: list[float]) -> str:
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    if not gaps:
        return "one SYN, no retransmission seen yet"
    txt = "sent at +" + ", +".join(f"{o:g}" for o in offsets) + " s"
    if len(gaps) >= 2 and all(g2 > 1.6 * g1 for g1, g2 in itertools.pairwise(gaps)):
        txt += " (exponential backoff: each wait doubles, as Linux does with tcp_syn_retries)"
    elif gaps and all(0.8 < g < 1.3 for g in gaps):
        txt += " (one-second steps: Linux tcp_syn_linear_timeouts)"
    return txt


@dataclass
class Admitted:
    """Handshakes a listener answered (SYN-ACK rows), keyed by the listener's address and port."""

    hi: np.ndarray
    lo: np.ndarray
    port: np.ndarray
    ts: np.ndarray
    stream: np.ndarray

    def near(self, c: Conn, lo_ns: int, hi_ns: int) -> int:
        """How many other connections this listener answered between lo_ns and hi_ns."""
        t = c.cap.table
        r = int(c.rows[0])
        if c.side[0] == CLIENT:
            h, lo_, p = int(t["dst_hi"][r]), int(t["dst_lo"][r]), int(t["dport"][r])
        else:
            h, lo_, p = int(t["src_hi"][r]), int(t["src_lo"][r]), int(t["sport"][r])
        m = (
            (self.hi == h)
            & (self.lo == lo_)
            & (self.port == p)
            & (self.ts >= lo_ns)
            & (self.ts <= hi_ns)
            & (self.stream != c.sid)
        )
        return len(unique_sorted(self.stream[m]))


def admitted(diag: Diag) -> Admitted:
    got: Admitted | None = diag.cache.get("admitted")
    if got is None:
        t = diag.cap.table
        f = t["flags"] if len(t) else np.zeros(0, np.uint16)
        m = (f & (SYN | ACK | RST)) == (SYN | ACK)
        got = Admitted(
            t["src_hi"][m], t["src_lo"][m], t["sport"][m], t["ts_ns"][m], diag.cap.stream[m]
        )
        diag.cache["admitted"] = got
    return got
