"""Who a RST answers, shared by middlebox-reset, half-open-reset and abortive-close."""

from __future__ import annotations

from collections import Counter

from tcpwhy.decode.table import ACK, SYN
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
    ttls = Counter(
        c.ttl[i] for i in range(c.n) if c.side[i] == who and i != skip and not c.is_rst(i)
    )
    if not ttls:
        return None
    ttl, n = ttls.most_common(1)[0]
    return ttl if n >= 2 else None
