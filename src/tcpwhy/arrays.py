"""numpy helpers that every stage uses, where numpy's own way is measurably slow."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import numpy.typing as npt

from tcpwhy.arrays_kernel import first_rows, first_seen_ids, run_counts

SCAN_ROWS = 1 << 20
"""Rows a pass over a whole capture takes at once when it keeps no per-row result
(counting, finding first rows, testing): whole-capture masks, keys and row lists were
tens of MB of temporaries each at 4 M packets, a block of rows a few MB."""


def unique_sorted(a: npt.ArrayLike) -> npt.NDArray[Any]:
    """`numpy.unique(a)` of integers, by a sort: numpy 2.4's hashing `unique` (taken when
    no index, inverse or count is asked for) needs a third of a second to a second for
    200,000 distinct values, a sort a few hundredths of that."""
    s = np.sort(np.asarray(a), axis=None)
    if len(s) < 2:
        return s
    return s[_run_starts(s)]


UNIQUE_HASHED = 1 << 14
"""Distinct values `unique_inverse` finds by hashing before it sorts instead."""


def unique_inverse(a: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """`numpy.unique(a, return_inverse=True)` of 64-bit integers with few distinct values
    (codes packed into a key per row): one pass through a small hash table, then a sort of
    the distinct values alone. numpy sorts every row: a flood's 3 million records' end
    words took 0.65 s of `conns`, the hash 0.03 s. More distinct values than
    `UNIQUE_HASHED`: numpy's sort."""
    k = np.ascontiguousarray(a, np.int64).reshape(-1)
    n = len(k)
    size = 1 << max(4, min(2 * n, 2 * UNIQUE_HASHED).bit_length())
    slots = np.full(size, -1, np.int64)
    firsts = np.empty(min(n, UNIQUE_HASHED), np.int64)
    ids = np.empty(n, np.int64)
    g = first_seen_ids(k, slots, firsts, ids)
    if g < 0:
        u, inv = np.unique(k, return_inverse=True)
        return u, inv.reshape(-1)
    order = np.argsort(firsts[:g], kind="stable")
    rank = np.empty(g, np.int64)
    rank[order] = np.arange(g)
    return firsts[:g][order], rank[ids]


def positions(
    keys: npt.ArrayLike, values: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Where each of `values` stands in `keys` (in any order; the first of equal keys), and
    whether it is there at all (else the place is some other key's): the join of one id
    column to another, by one sort, where a dict of Python ints would cost a step per row."""
    k, v = np.asarray(keys), np.asarray(values)
    if not len(k):
        return np.zeros(len(v), np.int64), np.zeros(len(v), np.bool_)
    order = np.argsort(k, kind="stable")
    at = order[np.searchsorted(k, v, sorter=order).clip(0, len(k) - 1)]
    return at, k[at] == v


def _run_starts(s: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """Per element of sorted, non-empty `s`: whether it starts a run of equal values."""
    new = np.empty(len(s), np.bool_)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    return new


def group_ids(
    *keys: npt.NDArray[Any], at: npt.NDArray[np.integer[Any]] | None = None
) -> tuple[npt.NDArray[np.int64], int]:
    """Per row, the id of its group of equal keys (groups numbered in the keys' sorted
    order, as the inverse of `numpy.unique(axis=0)` numbers them), and how many groups.
    With `at`, the rows `at` of the keys (the keys are not copied whole).

    Keys that do not vary are left out before they are gathered (the high half of IPv4
    addresses), and the rest packed into one 64-bit key when their ranges fit (an IPv4
    address and a port do): one sort of one array, where a lexsort sorts each key, and
    numpy's default sort, since any order of equal keys numbers them alike (a flood's
    3 million sources: a third of the time of a stable lexsort, and a fifth of its
    temporaries). `numpy.unique(axis=0)` sorts the rows as structured values, 3.0 s for
    216,000 rows of three uint64 keys here against 0.16 s for a lexsort."""
    n = len(keys[0]) if at is None else len(at)
    if not n:
        return np.zeros(0, np.int64), 0
    varying = [v for _, v in _varying(keys, at) if v is not None]
    if not varying:
        return np.zeros(n, np.int64), 1
    packed = _pack(varying)
    if packed is not None:
        del varying
        order = np.argsort(packed[0])
        key = packed[0][order]  # sorted; the unsorted copy goes
        del packed
        new = _run_starts(key)
        del key
    else:
        order = np.lexsort(varying[::-1])
        new = np.zeros(n, np.bool_)
        new[0] = True
        for k in varying:
            ks = k[order]
            new[1:] |= ks[1:] != ks[:-1]
    gid: npt.NDArray[np.signedinteger[Any]] = np.cumsum(
        new, dtype=np.int32 if n < 1 << 31 else np.int64
    )
    gid -= 1
    inv = np.empty(n, np.int64)
    inv[order] = gid
    return inv, int(gid[-1]) + 1


def key_counts(
    *keys: npt.NDArray[Any], at: npt.NDArray[np.integer[Any]] | None = None
) -> tuple[list[npt.NDArray[Any]], npt.NDArray[np.int64]]:
    """Each distinct row of the keys, in sorted order (one array per key, in the keys'
    dtypes), and how many rows have it: `group_ids` and a bincount of its ids, for callers
    that need only the groups. Packed keys are sorted themselves (numpy's vectorised sort)
    and read back from the packing: no argsort and no scatter of ids to the rows (a
    flood's 3 million sources: 0.06 s against 0.40 s). A key with one value over the rows
    comes back as that value broadcast (read-only). Keys that do not pack (IPv6 addresses)
    go through `group_ids`."""
    n = len(keys[0]) if at is None else len(at)
    if not n:
        return [np.zeros(0, k.dtype) for k in keys], np.zeros(0, np.int64)
    cols = _varying(keys, at)
    varying = [v for _, v in cols if v is not None]
    packed = _pack(varying) if varying else None
    if varying and packed is None:
        inv, ng = group_ids(*keys, at=at)
        first = group_firsts(inv, ng)
        rows = first if at is None else np.asarray(at)[first]
        return [k[rows] for k in keys], np.bincount(inv, minlength=ng).astype(np.int64)
    if packed is None:  # every key constant: one group
        return [np.full(1, c, k.dtype) for (c, _), k in zip(cols, keys, strict=True)], np.full(
            1, n, np.int64
        )
    key, lows, bits = packed
    consts = [c for c, _ in cols]
    del varying, cols  # the gathered keys: only the packed ones are needed from here
    if sum(bits) <= 32:
        # sorted as 32-bit values, half the bytes to move: a flood's 3 million IPv4
        # sources 0.10 s against 0.17 s
        narrow = key.astype(np.uint32)
        narrow.sort()
        key[:] = narrow
        del narrow
    else:
        key.sort()
    counts = np.empty(n, np.int64)
    g = run_counts(key, counts)  # the distinct keys at the front, in place
    key, counts = key[:g], counts[:g]
    out: list[npt.NDArray[Any]] = []
    shift = sum(bits)
    j = 0
    for c, k in zip(consts, keys, strict=True):
        if c is not None:  # the same on every row: one value, broadcast (read-only)
            out.append(np.broadcast_to(np.asarray(c, k.dtype), key.shape))
            continue
        shift -= bits[j]
        d = key >> np.uint64(shift)
        d &= np.uint64((1 << bits[j]) - 1)
        d += np.uint64(lows[j] & 0xFFFF_FFFF_FFFF_FFFF)  # wraps back to the key's value
        out.append(d.astype(k.dtype, copy=False))
        j += 1
    return out, counts


def _varying(
    keys: tuple[npt.NDArray[Any], ...], at: npt.NDArray[np.integer[Any]] | None
) -> list[tuple[Any, npt.NDArray[Any] | None]]:
    """Per key: its one value if it is the same on every row meant (and None), else None and
    the rows meant. A key constant over all its rows is not gathered (the high half of
    IPv4 addresses)."""
    out: list[tuple[Any, npt.NDArray[Any] | None]] = []
    for k in keys:
        if at is not None and k.min() == k.max():
            out.append((k.min(), None))
            continue
        got = k if at is None else k[at]
        out.append((got.min(), None) if got.min() == got.max() else (None, got))
    return out


def _pack(
    varying: list[npt.NDArray[Any]],
) -> tuple[npt.NDArray[np.uint64], list[int], list[int]] | None:
    """The keys as one uint64 per row, each key's offset from its least value in its own
    bits, the first key highest (so the packed order is the keys' order), with the least
    values and the bit widths; None when they need more than 64 bits."""
    lows = [int(k.min()) for k in varying]
    bits = [(int(k.max()) - low).bit_length() for k, low in zip(varying, lows, strict=True)]
    if sum(bits) > 64:
        return None
    packed: npt.NDArray[np.uint64] | None = None
    for k, low, b in zip(varying, lows, bits, strict=True):
        # as unsigned, the difference wraps to the right value; the first key's is the
        # packing itself (a flood's 3 million sources: no second copy of them)
        d = np.subtract(
            k, np.uint64(low & 0xFFFF_FFFF_FFFF_FFFF), dtype=np.uint64, casting="unsafe"
        )
        if packed is None:
            packed = d
            continue
        packed <<= np.uint64(b)
        packed |= d
        del d
    assert packed is not None  # `varying` is not empty
    return packed, lows, bits


def first_where(
    mask: npt.NDArray[np.bool_], group: npt.NDArray[np.integer[Any]], ngroups: int
) -> npt.NDArray[np.signedinteger[Any]]:
    """Per group (each row's in `group`, 0 .. ngroups - 1), the first row where `mask` holds,
    else -1: row numbers in 32 bits where they fit (3 million streams' are 12 MB, not 24),
    in one compiled pass (the rows' indices and their groups, as arrays, were 48 MB at a
    flood's peak; a sort per block of rows was most of finding the servers' names)."""
    if len(mask) >= 1 << 31:
        out64 = np.full(ngroups, -1, np.int64)
        idx = np.flatnonzero(mask)
        out64[group[idx[::-1]]] = idx[::-1]
        return out64
    out = np.full(ngroups, -1, np.int32)
    first_rows(np.ascontiguousarray(mask, np.bool_), np.ascontiguousarray(group, np.int64), out)
    return out


def group_firsts(inv: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
    """Per group of `group_ids`, its first row: the row that stands for the group's keys."""
    first = np.full(n, len(inv), np.int64)
    np.minimum.at(first, inv, np.arange(len(inv)))
    return first


def extend_filled(
    a: npt.NDArray[Any], have: int, need: int, fill: Any, grow: float = 2.0, room: int = 0
) -> npt.NDArray[Any]:
    """Rows `have` to `need` of a pool of per-connection state set to `fill`, the first
    `have` kept: in `a` while it has room, else in a new array with room for `grow` times
    as many (a pool that its owner bounds grows by less), or for `room` rows if that is
    more (an owner that knows how many rows it may need: one array, never copied).

    Room is `numpy.empty`'s, address space until a row is first written, so only the rows
    in use are ever touched and each is copied about once as the pool grows. Pools grown by
    a quarter and filled whole wrote a 3 M-connection flood's state five times over: 1.5 s
    of page faults, and the old and new arrays both resident at each step."""
    if need <= have:
        return a
    if need > a.shape[0]:
        rows = max(need, int(grow * a.shape[0]), room, 1024)
        new = room_for((rows, *a.shape[1:]), a.dtype)
        new[:have] = a[:have]
        a = new
    a[have:need] = fill
    return a


ROOM_PAGES_FROM = 4 << 20
"""Bytes from which `room_for` maps its memory in 4 KB pages: numpy asks for transparent
huge pages from 4 MB on."""


def room_for(shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """`numpy.empty` for room that rows are written into once, front to back (columns read
    chunk by chunk, per-connection pools): in 4 KB pages (`sparse_zeros`) from
    ROOM_PAGES_FROM on, where numpy asks for transparent huge pages. With huge pages on
    request and the kernel's defragmentation on request as well (this host's settings,
    and common ones), the first write into each 2 MB made the kernel compact memory:
    `analyze` spent 0.4 to 1.4 s of system time writing a 4.5 M-packet capture's columns,
    against 0.5 s in small pages (both 2.1 s of user time)."""
    dt = np.dtype(dtype)
    if int(np.prod(shape, dtype=np.int64)) * dt.itemsize >= ROOM_PAGES_FROM:
        return sparse_zeros(shape, dt)
    return np.empty(shape, dt)


def sparse_zeros(shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """Zeros whose memory comes only with the pages written, in 4 KB pages. `numpy.zeros`
    maps its memory lazily too, but asks for huge pages: with transparent huge pages on, a
    write anywhere in 2 MB brings in all of it, so a few hundred rows written at random
    made a 232 MB array resident. For arrays of which a run may write only a few rows (the
    slot pool, when a SYN flood's connections are parked). Freed with the array."""
    dt = np.dtype(dtype)
    size = max(1, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(m, dt, int(np.prod(shape, dtype=np.int64))).reshape(shape)
