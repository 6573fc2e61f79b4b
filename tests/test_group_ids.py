"""`arrays.group_ids` and `arrays.key_counts` against a plain Python grouping: the packed
one-key sort, the lexsort for keys too wide to pack, constant keys left out, and `at`
picking rows without copies; `arrays.positions` against a dict; `arrays.unique_inverse`
against a plain Python sort, hashed and past its hashing limit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.arrays import (
    UNIQUE_HASHED,
    group_firsts,
    group_ids,
    key_counts,
    positions,
    unique_inverse,
)


def _oracle(*keys: npt.NDArray[np.generic]) -> tuple[list[int], int]:
    """Groups numbered in the sorted order of the rows' key tuples (Python ints: exact)."""
    rows = list(zip(*(k.tolist() for k in keys), strict=True))
    ids = {r: i for i, r in enumerate(sorted(set(rows)))}
    return [ids[r] for r in rows], len(ids)


def _check(*keys: npt.NDArray[np.generic], at: npt.NDArray[np.int64] | None = None) -> None:
    want = _oracle(*(k if at is None else k[at] for k in keys))
    inv, n = group_ids(*keys, at=at)
    assert inv.dtype == np.int64
    assert (inv.tolist(), n) == want
    _check_counts(*keys, at=at)


def _check_counts(*keys: npt.NDArray[np.generic], at: npt.NDArray[np.int64] | None = None) -> None:
    """`key_counts`: the distinct rows in sorted order, in the keys' dtypes, with their sizes."""
    picked = [k if at is None else k[at] for k in keys]
    seen = Counter(zip(*(k.tolist() for k in picked), strict=True))
    want = sorted(seen)
    got, counts = key_counts(*keys, at=at)
    assert [g.dtype for g in got] == [k.dtype for k in keys]
    assert list(zip(*(g.tolist() for g in got), strict=True)) == want
    assert counts.dtype == np.int64
    assert counts.tolist() == [seen[r] for r in want]


RNG = np.random.default_rng(7)
N = 5000


def test_ipv4_addresses_and_ports_packed() -> None:
    # the high half of an IPv4 address is one value: left out, the rest packed in 64 bits
    hi = np.zeros(N, np.uint64)
    lo = (0xFFFF << 32 | RNG.integers(0, 1 << 32, N, dtype=np.uint64)).astype(np.uint64)
    lo[::7] = lo[0]  # repeated addresses
    port = RNG.integers(0, 4, N).astype(np.int64) * 443
    _check(hi, lo, port)
    _check(lo, port)
    _check(hi, lo)  # 32 bits of address alone: sorted as 32-bit values
    _check(port, at=np.arange(0, N, 3))


def test_keys_too_wide_to_pack_use_a_lexsort() -> None:
    a = RNG.integers(0, np.iinfo(np.int64).max, N, dtype=np.int64).astype(np.uint64) << 1
    b = RNG.integers(0, np.iinfo(np.int64).max, N, dtype=np.int64).astype(np.uint64)
    a[::3], b[::3] = a[0], b[0]
    _check(a, b)


def test_signed_keys_whose_range_overflows_their_type() -> None:
    # -100..100 in int8: key - min does not fit int8, the packing must still order them
    k = RNG.integers(-100, 101, N).astype(np.int8)
    s = RNG.integers(-(2**40), 2**40, N).astype(np.int64)
    _check(k)
    _check(k, s)
    _check(np.array([True, False, True]), np.array([3, 3, 1], np.int16))


def test_rows_picked_with_at() -> None:
    hi = np.zeros(N, np.uint64)
    lo = RNG.integers(0, 50, N).astype(np.uint64)
    port = RNG.integers(0, 3, N).astype(np.int64)
    at = np.sort(RNG.choice(N, N // 3, replace=False)).astype(np.int64)
    _check(hi, lo, port, at=at)
    # a key that varies over the whole column but not over the rows picked
    lo2 = np.arange(N, dtype=np.uint64)
    _check(lo2, port, at=np.array([5, 5, 5], np.int64))
    # read-only broadcast columns (as `Capture.endpoints` gives constant ones)
    const = np.broadcast_to(np.array([9], np.uint64), (N,))
    _check(const, lo, at=at)
    _check(const, lo)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny(n: int) -> None:
    k = np.arange(n, dtype=np.int64)
    inv, ng = group_ids(k)
    assert (inv.tolist(), ng) == ([0] * n, n)
    inv, ng = group_ids(k, at=np.zeros(0, np.int64))
    assert (inv.tolist(), ng) == ([], 0)
    _check_counts(k)
    _check_counts(k, at=np.zeros(0, np.int64))


def test_all_keys_constant_is_one_group() -> None:
    inv, n = group_ids(np.full(10, 3), np.zeros(10, np.uint64))
    assert (inv.tolist(), n) == ([0] * 10, 1)
    _check_counts(np.full(10, 3), np.zeros(10, np.uint64))
    _check_counts(np.full(10, 3), np.arange(10, dtype=np.uint64), at=np.array([4, 4], np.int64))


def test_firsts_name_each_group() -> None:
    k = RNG.integers(0, 30, N).astype(np.int64)
    inv, n = group_ids(k)
    first = group_firsts(inv, n)
    assert first.tolist() == [int(np.flatnonzero(inv == g)[0]) for g in range(n)]


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_positions_join_as_a_dict_does(n: int) -> None:
    rng = np.random.default_rng(n)
    keys = rng.permutation(np.arange(3 * n, dtype=np.int64))[:n]  # distinct, any order
    values = rng.integers(-2, 3 * n + 2, 2 * n + 3)
    first: dict[int, int] = {}
    for i, k in enumerate(keys.tolist()):
        first.setdefault(k, i)
    at, found = positions(keys, values)
    assert found.tolist() == [v in first for v in values.tolist()]
    assert [int(a) for a, f in zip(at, found, strict=True) if f] == [
        first[v] for v in values.tolist() if v in first
    ]
    # equal keys: the first of them
    at, found = positions(np.array([5, 3, 5, 3]), np.array([3, 5, 4]))
    assert at[:2].tolist() == [1, 0] and found.tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("n", "distinct"),
    [(0, 1), (1, 1), (7, 3), (5000, 40), (20000, 4000), (3 * UNIQUE_HASHED, UNIQUE_HASHED + 1)],
)
def test_unique_inverse_numbers_values_in_sorted_order(n: int, distinct: int) -> None:
    """The distinct values sorted, and each row's place among them, as a sort of Python ints
    gives them; the last case has more distinct values than the hash takes (numpy's sort)."""
    rng = np.random.default_rng(n)
    values = rng.integers(-(2**62), 2**62, distinct) << 1  # full-width keys, negative ones
    a = values[rng.integers(0, distinct, n)] if n else np.zeros(0, np.int64)
    u, inv = unique_inverse(a)
    want = sorted(set(a.tolist()))
    assert u.dtype == np.int64 and inv.dtype == np.int64
    assert u.tolist() == want
    place = {x: i for i, x in enumerate(want)}
    assert inv.tolist() == [place[x] for x in a.tolist()]
