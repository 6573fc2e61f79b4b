"""Compiled helpers of `tcpwhy.arrays`, where numpy's way needs whole-array temporaries.

`run_counts` turns sorted keys into their distinct values and how many times each comes,
in place: numpy's way (the starts of the runs, their differences, the keys at the starts)
made three arrays of the keys' length, 72 MB beside the keys for a flood's 3 million
sources, at the peak of `analyze`.
"""

from __future__ import annotations

from typing import Any

from tcpwhy.native import kernel


@kernel("u8[:] i8[:] -> i8", nogil=True)
def run_counts(keys: Any, counts: Any) -> int:
    """Sorted `keys` (not empty): each distinct value once, at the front of `keys`, and the
    length of its run into `counts` (as long as `keys`); the number of distinct values."""
    g = 0
    prev = keys[0]
    run = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        if k != prev:
            keys[g] = prev
            counts[g] = run
            g += 1
            prev = k
            run = 0
        run += 1
    keys[g] = prev
    counts[g] = run
    return g + 1
