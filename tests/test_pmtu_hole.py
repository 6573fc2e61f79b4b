"""The receiver's view of a PMTU black hole (`pmtu_black_hole.unfilled_hole`): the running
maximum it takes where it can against the segment-by-segment walk in sequence space."""

from __future__ import annotations

import numpy as np

from tcpwhy.diagnose.pmtu_black_hole import _walk_hole, unfilled_hole
from tcpwhy.tcp.seq import HALF


def test_unfilled_hole_is_the_walk() -> None:
    rng = np.random.default_rng(3)
    seen = {"hole": 0, "none": 0, "walked": 0}
    for trial in range(5000):
        n = int(rng.integers(2, 30))
        # near the top of the sequence space a third of the time: the segments wrap
        base = int(rng.integers(0, 1 << 32)) if trial % 3 == 0 else int(rng.integers(0, 1000))
        plen = rng.choice([1, 100, 536, 1448, 1460], n).astype(np.int64)
        # in order mostly; some sent again (back) and some missing (a jump ahead)
        pos = np.cumsum(plen) - plen + rng.choice([0, 0, 0, 0, -1448, 1448, 2896], n)
        seq = ((base + pos) & 0xFFFFFFFF).astype(np.int64)
        got = unfilled_hole(seq, plen)
        assert got == _walk_hole(seq.tolist(), plen.tolist()), (trial, seq.tolist())
        seen["hole" if got else "none"] += 1
        seen["walked"] += int((seq + plen).max() - seq.min() >= HALF)
    assert min(seen.values()) >= 500  # holes, none, and directions that wrap all met
