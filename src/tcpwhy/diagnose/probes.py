"""Keep-alive and zero-window probes: 0/1-byte segments with seq = next - 1 (K11, K12).

Linux sends both the same way; a probe sent while the peer's last advertised
window was 0 is a zero-window probe, otherwise a keep-alive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.diagnose.context import U32, Conn
from tcpwhy.diagnose.registry import Diag


@dataclass
class Probe:
    i: int
    zero_window: bool


def candidate_streams(diag: Diag) -> list[int]:
    """Streams with repeated 0/1-byte segments at one sequence number from one side."""
    cap = diag.cap
    t = cap.table
    if not len(t):
        return []
    m = ((t["flags"] & (SYN | FIN | RST)) == 0) & (t["payload_len"] <= 1)
    if not m.any():
        return []
    key = np.stack([cap.stream[m], cap.side[m].astype(np.int64), t["seq"][m].astype(np.int64)], 1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    rep = cnt[inv.ravel()] >= 2
    return sorted({int(s) for s in cap.stream[m][rep]})


def probes(c: Conn, who: int) -> list[Probe]:
    out: list[Probe] = []
    nxt: int | None = None
    peer_win: int | None = None
    for i in range(c.n):
        f = c.flags[i]
        if c.side[i] != who:
            if not f & (SYN | RST) and f & ACK:
                peer_win = c.win[i]
            continue
        end = (c.seq[i] + c.plen[i] + (1 if f & (SYN | FIN) else 0)) & U32
        if (
            nxt is not None
            and not f & (SYN | FIN | RST)
            and c.plen[i] <= 1
            and c.seq[i] == (nxt - 1) & U32
        ):
            out.append(Probe(i, peer_win == 0))
            continue
        if nxt is None or ((end - nxt) & U32) < 0x80000000:
            nxt = end
    return out
