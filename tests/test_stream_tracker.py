"""The stream tracker's conversation table against a dictionary: endpoints that share their
low halves and differ in the high ones (IPv4 beside IPv6), conversations forgotten and their
slots reused by others, over chunks."""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, PacketTable
from tcpwhy.tcp.streams import StreamTracker

_V6 = 0x2001_0DB8 << 32


def _table(rows: list[tuple[int, int, int, int, int, int]]) -> PacketTable:
    """Pure ACKs (no SYN: no port reuse) between the endpoints of `rows`
    (src_hi, src_lo, sport, dst_hi, dst_lo, dport)."""
    n = len(rows)
    a = np.array(rows, np.uint64).reshape(n, 6)
    cols = {
        "src_hi": a[:, 0].copy(),
        "src_lo": a[:, 1].copy(),
        "sport": a[:, 2].astype(np.uint16),
        "dst_hi": a[:, 3].copy(),
        "dst_lo": a[:, 4].copy(),
        "dport": a[:, 5].astype(np.uint16),
        "flags": np.full(n, ACK, np.uint16),
        "seq": np.arange(n, dtype=np.uint32),
        "ack": np.arange(n, dtype=np.uint32),
        "opt_ws": np.full(n, -1, np.int8),
        "win": np.full(n, 1000, np.uint16),
        "frame": np.arange(1, n + 1, dtype=np.uint64),
    }
    return PacketTable(cols)


def test_conversations_as_a_dictionary_keeps_them() -> None:
    rng = np.random.default_rng(7)
    his, los, ports = [0, _V6, _V6 + 1], [1, 2, 0xFFFF_0A00_0001], [80, 81]
    tracker = StreamTracker()
    streams: dict[tuple[object, ...], int] = {}  # conversation -> its stream
    slot_of: dict[tuple[object, ...], int] = {}  # conversation -> the tracker's slot
    next_stream = 0
    for _ in range(40):
        rows = []
        for _ in range(int(rng.integers(1, 200))):
            a = (int(rng.choice(his)), int(rng.choice(los)), int(rng.choice(ports)))
            b = (int(rng.choice(his)), int(rng.choice(los)), int(rng.choice(ports)))
            if a != b:
                rows.append((*a, *b))
        out = tracker.feed(_table(rows))
        for i, r in enumerate(rows):
            a, b = r[:3], r[3:]
            key = (min(a, b), max(a, b))
            if key not in streams:
                streams[key] = next_stream
                next_stream += 1
            assert out["stream"][i] == streams[key], (r, key)
            assert out["dir"][i] == (1 if a > b else 0)
            slot_of[key] = int(out["conv"][i])
        # forget a third of the conversations held: their slots go to the next new ones
        held = sorted(streams)
        gone = [held[j] for j in rng.permutation(len(held))[: len(held) // 3]]
        tracker.forget(np.array([slot_of[k] for k in gone], np.int64))
        for k in gone:
            del streams[k], slot_of[k]
        assert tracker.conversations == len(streams)
        assert len(set(slot_of.values())) == len(slot_of)
    assert next_stream > 100  # conversations forgotten came back as new streams


def test_a_reused_slot_takes_its_new_keys_high_halves() -> None:
    """An IPv6 conversation forgotten, its slot taken by one whose addresses have the same low
    halves and zero high ones: that one's packets stay one stream, and the first comes
    back as a new stream of its own."""
    v6 = (_V6, 1, 1000, _V6, 2, 80)
    low = (0, 1, 1000, 0, 2, 80)
    tracker = StreamTracker()
    first = tracker.feed(_table([v6]))
    tracker.forget(first["conv"])
    got = tracker.feed(_table([low, low, v6, low]))
    assert got["conv"][0] == first["conv"][0]  # the slot is reused
    assert got["stream"].tolist() == [1, 1, 2, 1]


def test_a_table_beyond_the_caches_finds_the_same_slots() -> None:
    """`_lookup` fetches entries ahead in a table of a million entries or more: the same
    slots and directions as in a small table, slots numbered by first appearance."""
    from tcpwhy.tcp import streams

    rng = np.random.default_rng(3)
    n = 60_000
    lo = rng.choice(np.array([1, 2, 3, 0xFFFF_0A00_0001], np.uint64), (n, 2))
    hi = rng.choice(np.array([0, _V6], np.uint64), (n, 2))
    ports = rng.integers(1000, 1400, (n, 2)).astype(np.uint16)
    got = {}
    for size in (1 << 17, streams._PREFETCH_FROM):
        slot, d = np.empty(n, np.int64), np.empty(n, np.int8)
        meta = np.zeros(3, np.int64)
        streams._lookup(
            (hi[:, 0].copy(), lo[:, 0].copy(), hi[:, 1].copy(), lo[:, 1].copy(),
             ports[:, 0].copy(), ports[:, 1].copy()),
            np.full(size, -1, np.int64), np.zeros((n, 3), np.uint64),
            np.zeros((n, 2), np.uint64), np.full(n, -1, np.int32), np.zeros(1, np.int64),
            meta, slot, d,
        )  # fmt: skip
        got[size] = (slot, d)
    first: dict[tuple[object, ...], int] = {}
    want = []
    for i in range(n):
        a = (int(hi[i, 0]), int(lo[i, 0]), int(ports[i, 0]))
        b = (int(hi[i, 1]), int(lo[i, 1]), int(ports[i, 1]))
        want.append(first.setdefault((min(a, b), max(a, b)), len(first)))
    for slot, d in got.values():
        assert slot.tolist() == want
        assert np.array_equal(d, np.array([a > b for a, b in zip(
            map(tuple, np.stack([hi[:, 0], lo[:, 0], ports[:, 0]], 1).tolist()),
            map(tuple, np.stack([hi[:, 1], lo[:, 1], ports[:, 1]], 1).tolist()),
            strict=True,
        )]))  # fmt: skip


def test_the_table_is_sized_by_the_conversations_held() -> None:
    """The hash table grows to hold the conversations and the next chunk at most 7/10 full,
    and no more: a chunk that grew the slot arrays once doubled the table beyond that (a
    3 M-SYN flood's `conns`: 4 M entries, 34 MB, for half a million conversations)."""
    tracker = StreamTracker()
    chunk = 20_000
    for c in range(8):
        ids = np.arange(c * chunk, (c + 1) * chunk, dtype=np.uint64)
        a = np.zeros((chunk, 6), np.uint64)
        a[:, 1] = 0x0A00_0000 + ids  # one client address per conversation
        a[:, 2] = 40000
        a[:, 4] = 0xC633_640A
        a[:, 5] = 443
        tracker.feed(_table([(r[0], r[1], r[2], r[3], r[4], r[5]) for r in a.tolist()]))
        held = tracker.conversations
        assert held == (c + 1) * chunk
        size = len(tracker._tab_val)
        assert 10 * held <= 7 * size  # room for what it holds
        assert size < 2 * max(4096, 10 * (held + chunk) / 7)  # and not twice what it needs
