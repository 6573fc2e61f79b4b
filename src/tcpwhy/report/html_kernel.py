"""Compiled counting for the HTML report's charts.

Why it exists: the chart of sockets per state over time counts, for every step of every
connection's state timeline, the state entered and the state left in the step's time
bin. In numpy that was a sort by connection and side, a search of the bin edges, and two
dozen temporaries of every step: a 3 M-SYN flood's 12 million steps took 6 s of its page,
most of it the kernel mapping those temporaries afresh. One pass here, with the state
each side was last in (`tcpwhy.report.html._state_counts` says what is counted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tcpwhy.native import kernel


@kernel("i8[:] u1[:] u1[:] i8[:] i8 f8[:] i8 i8[:,:,:] -> none", nogil=True)
def state_deltas(
    conn: Any,
    side: Any,
    state: Any,
    ts_ns: Any,
    t0: int,
    edges: Any,
    nconn: int,
    delta: Any,
) -> None:
    """Add to ``delta[side, state, bin]`` +1 for each step's state, and -1 for the state the
    same side of the same connection was in before it (steps of a connection's side in
    time order, as the timelines list them). A step's bin is the last of the evenly spaced
    `edges` at or below its time since `t0` (``searchsorted(edges, t, "right") - 1``),
    clipped to the bins: estimated by a division, then moved along the edges."""
    last = edges.shape[0] - 1
    width = edges[last] / last
    prev = np.full(2 * nconn, -1, np.int16)
    for i in range(conn.shape[0]):
        x = np.float64(ts_ns[i] - t0)
        q = x / width
        b = 0 if q < 0 else (last if q > last else int(q))  # (no cast out of range)
        while b > 0 and edges[b] > x:
            b -= 1
        while b < last and edges[b + 1] <= x:
            b += 1
        if b > last - 1:
            b = last - 1
        s = side[i]
        st = state[i]
        delta[s, st, b] += 1
        k = conn[i] * 2 + s
        p = prev[k]
        if p >= 0:
            delta[s, p, b] -= 1
        prev[k] = st
