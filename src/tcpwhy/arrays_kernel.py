"""Compiled helpers of `tcpwhy.arrays`, where numpy's way needs whole-array temporaries.

`run_counts` turns sorted keys into their distinct values and how many times each comes,
in place: numpy's way (the starts of the runs, their differences, the keys at the starts)
made three arrays of the keys' length, 72 MB beside the keys for a flood's 3 million
sources, at the peak of `analyze`. `first_rows` finds each group's first row where a mask
holds (a stream's first SYN, its first payload) without the index arrays of every such row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


@kernel("i8[:] i8[:] i8[:] i8[:] -> i8", nogil=True)
def first_seen_ids(keys: Any, slots: Any, firsts: Any, ids: Any) -> int:
    """Per key, the number of its value in the order the values first come (into `ids`), and
    each value once, in that order, at the front of `firsts`; the number of distinct values,
    or -1 as soon as they would fill more than half of `slots` (a hash table whose length is
    a power of two, every entry -1). Linear probing on a multiplicative hash: a table of a
    few thousand entries stays in the cache, where a sort moves every key."""
    mask = slots.shape[0] - 1
    limit = min(slots.shape[0] // 2, firsts.shape[0])
    g = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        h = np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
        while True:
            s = slots[h]
            if s < 0:
                if g >= limit:
                    return -1
                slots[h] = g
                firsts[g] = k
                ids[i] = g
                g += 1
                break
            if firsts[s] == k:
                ids[i] = s
                break
            h = (h + 1) & mask
    return g


@kernel("b1[:] i8[:] i4[:] -> none", nogil=True)
def first_rows(mask: Any, stream: Any, out: Any) -> None:
    """Per group (`stream`: a row's group, 0 .. len(out) - 1), the first row where `mask`
    holds, into `out` (-1 where none: the caller fills it so)."""
    for i in range(mask.shape[0]):
        if mask[i]:
            s = stream[i]
            if out[s] < 0:
                out[s] = i
