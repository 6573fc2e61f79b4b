"""Who a RST answers, shared by middlebox-reset, half-open-reset and abortive-close."""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose.context import Conn


def trigger(c: Conn, r: int) -> int | None:
    """The peer's segment the RST at row r answers: the peer's last packet before it, if that
    carried data or a FIN and the RST's sequence number is what that segment acknowledged."""
    x = c.side[r]
    for j in range(r - 1, -1, -1):
        if c.side[j] == x:
            return None
        if c.plen[j] > 0 or c.is_fin(j) or not c.flags[j] & SYN:
            if c.flags[j] & ACK and c.ack[j] == c.seq[r]:
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
