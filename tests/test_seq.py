"""The one home of 32-bit sequence arithmetic: each helper on Python ints and on numpy
columns alike, held to the serial-number rules it stands for (RFC 1982, as RFC 9293
compares sequence numbers), at the edges of the space where hand-written masks go wrong."""

from __future__ import annotations

import numpy as np

from tcpwhy.tcp.seq import HALF, MOD, seq_add, seq_diff, seq_geq, seq_gt, seq_offset

EDGES = [0, 1, 2, HALF - 2, HALF - 1, HALF, HALF + 1, MOD - 2, MOD - 1]


def _pairs() -> list[tuple[int, int]]:
    rng = np.random.default_rng(7)
    pairs = [(a, b) for a in EDGES for b in EDGES]
    pairs += [(int(a), int(b)) for a, b in rng.integers(0, MOD, (500, 2))]
    return pairs


def test_helpers_follow_serial_number_rules() -> None:
    for a, b in _pairs():
        forward = (a - b) % MOD  # how far a lies past b, going forward
        assert seq_offset(a, b) == forward
        assert seq_diff(a, b) == (forward if forward < HALF else forward - MOD)
        assert seq_geq(a, b) == (forward < HALF)
        assert seq_gt(a, b) == (0 < forward < HALF)
        assert seq_add(b, forward) == a
        assert seq_add(a, -b) == forward


def test_columns_give_what_ints_give() -> None:
    pairs = _pairs()
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    for fn in (seq_offset, seq_diff, seq_geq, seq_gt, seq_add):
        got = fn(a, b)
        assert got.tolist() == [fn(x, y) for x, y in pairs], fn.__name__
