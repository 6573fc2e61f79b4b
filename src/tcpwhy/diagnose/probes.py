"""Keep-alive and zero-window probes: 0/1-byte segments with seq = next - 1.

These are the segments Wireshark labels 'TCP Keep-Alive' (the `keep_alive`
analysis flag). Linux sends its zero-window probes the same way; a probe
sent while the peer's last advertised window was 0 is a zero-window probe,
otherwise a keep-alive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose.context import Conn
from tcpwhy.diagnose.registry import Diag


@dataclass
class Probe:
    i: int
    zero_window: bool


def candidate_streams(diag: Diag) -> list[int]:
    """Streams in which one side sent two or more probes."""
    cap = diag.cap
    ka = cap.flag("keep_alive")
    if not ka.any():
        return []
    key = cap.stream[ka] * 2 + cap.side[ka]
    per_side = np.bincount(key, minlength=2 * cap.nstreams).reshape(-1, 2)
    return [int(s) for s in np.flatnonzero(per_side.max(1) >= 2)]


def probes(c: Conn, who: int) -> list[Probe]:
    """`who`'s probes in the connection, each with whether the peer's window was closed."""
    out: list[Probe] = []
    peer_win: int | None = None
    ka = c.flag("keep_alive")
    for i in range(c.n):
        f = c.flags[i]
        if c.side[i] != who:
            if not f & (SYN | RST) and f & ACK:
                peer_win = c.win[i]
        elif ka[i]:
            out.append(Probe(i, peer_win == 0))
    return out
