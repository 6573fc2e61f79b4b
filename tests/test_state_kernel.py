"""The compiled state-machine runner against the readable one, connection by connection.

`tcpwhy.tcp.state_kernel` is a hand-written port of `derive_events` and
`Endpoint` for speed; `run_connection` is the oracle. Every connection of
every shipped capture and of the Zeek corpus, hand-built edge cases and
random segment sequences must give the same timelines (state, time, frame,
event of every step), starting states, assumed flags, final states and
unexpected-event counts, with and without a capture end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, PSH, RST, SYN, PacketTable
from tcpwhy.tcp.state import (
    ICMP_ERROR_ROW,
    STAY,
    STAYS,
    TIME_WAIT_NS,
    TRANSITIONS,
    UNEXPECTED,
    ConnectionStates,
    Event,
    IcmpErrorRows,
    State,
    icmp_errors,
    run_connection,
    with_icmp_rows,
)
from tcpwhy.tcp.state_kernel import NEXT, Timelines, run_connections
from tcpwhy.tcp.streams import StreamTracker
from tests.test_tcp_state import MS, SEC, U32, C, Cap, R

DATA = Path(str(resources.files("tcpwhy") / "data"))
SHIPPED = [*sorted((DATA / "lab").glob("*.pcap")), DATA / "demo-stale-keepalive.pcap"]

Cols = list[npt.NDArray[np.generic]]


def test_next_table_is_the_two_tables() -> None:
    for st in State:
        for ev in Event:
            want = TRANSITIONS.get((st, ev))
            got = int(NEXT[st, ev])
            if want is not None:
                assert got == want
            else:
                assert got == (STAY if (st, ev) in STAYS else UNEXPECTED)


# ---------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------


def _steps(res: Timelines, c: int, side: int) -> list[tuple[int, int, int, int]]:
    sl = slice(int(res.offsets[c]), int(res.offsets[c + 1]))
    mine = res.side[sl] == side
    return list(
        zip(
            res.state[sl][mine].tolist(),
            res.ts_ns[sl][mine].tolist(),
            res.frame[sl][mine].tolist(),
            res.event[sl][mine].tolist(),
            strict=True,
        )
    )


def _check(res: Timelines, c: int, want: ConnectionStates) -> None:
    for side, ep in enumerate((want.originator, want.responder)):
        expect = [
            (int(s.state), s.ts_ns, s.frame, -1 if s.event is None else int(s.event))
            for s in ep.timeline
        ]
        where = f"connection {c}, side {side}"
        assert _steps(res, c, side) == expect, where
        assert res.start[c, side] == ep.timeline[0].state, where
        assert bool(res.assumed[c]) == ep.assumed, where
        assert res.final[c, side] == ep.state, where
        assert res.unexpected[c, side] == len(ep.unexpected), where
        last = int(res.last[c, side])
        assert res.side[last] == side and last < res.offsets[c + 1], where
        assert (res.state[last], res.ts_ns[last]) == (ep.state, ep.timeline[-1].ts_ns), where
    assert (res.conn[res.offsets[c] : res.offsets[c + 1]] == c).all()


def compare(cols: Cols, offsets: Sequence[int], end_ns: int | None = None) -> int:
    """Both runners on every connection of a CSR batch; returns the connections compared."""
    off = np.asarray(offsets, np.int64)
    res = run_connections(*cols, off, end_ns=end_ns)
    assert res.offsets[-1] == len(res.conn)
    for c in range(len(off) - 1):
        a, b = int(off[c]), int(off[c + 1])
        want = run_connection(*(x[a:b] for x in cols), end_ns=end_ns)
        _check(res, c, want)
    return len(off) - 1


def table_connections(t: PacketTable) -> tuple[Cols, npt.NDArray[np.int64]]:
    """Every tcp.stream of a table as one connection, rows in capture order (CSR), with the
    ICMP errors about it among them (`with_icmp_rows`); the originator is the sender of its
    first packet."""
    tracker = StreamTracker()
    s = tracker.feed(t)
    order = np.argsort(s["stream"], kind="stable")
    stream = s["stream"][order]
    ids, counts = np.unique(stream, return_counts=True)
    off = np.r_[0, np.cumsum(counts)].astype(np.int64)
    d = s["dir"][order]
    first_dir = d[off[:-1]]
    direction = (d != np.repeat(first_dir, counts)).astype(np.uint8)
    cols: Cols = [direction]
    cols += [t[k][order] for k in ("flags", "seq", "ack", "payload_len", "ts_ns", "frame")]
    e = icmp_errors(t.icmp, tracker.icmp_out)
    conn = np.searchsorted(ids, e["stream"])
    errors = IcmpErrorRows(
        conn, e["at"], (e["dir"] != first_dir[conn]).astype(np.uint8), e["ts_ns"], e["frame"]
    )
    merged, off = with_icmp_rows(off, order, cols, errors)
    return list(merged), off


def compare_capture(path: Path) -> int:
    t = read_table(str(path))
    if not len(t):
        return 0
    cols, off = table_connections(t)
    n = compare(cols, off)
    # with the capture's end: TIME_WAIT timers 60 s before it fire
    assert compare(cols, off, end_ns=int(t["ts_ns"].max())) == n
    # and long after it: every one fires
    assert compare(cols, off, end_ns=int(t["ts_ns"].max()) + TIME_WAIT_NS) == n
    return n


def test_every_connection_of_the_shipped_captures() -> None:
    counts = {p.name: compare_capture(p) for p in SHIPPED}
    assert all(counts.values()), counts
    assert sum(counts.values()) >= 41, counts  # every tcp.stream (41 before syn-flood.pcap)


def test_icmp_errors_run_among_the_segments() -> None:
    """The lab's ICMP rejects: each error is a row of its connection, and each ends the
    connect() it answers in both runners (the comparison above covers them too)."""
    for name, n in (("icmp-reject.pcap", 6), ("icmp-no-route.pcap", 2)):
        cols, off = table_connections(read_table(str(DATA / "lab" / name)))
        icmp = (cols[1] & ICMP_ERROR_ROW) != 0
        assert int(icmp.sum()) == n, name
        res = run_connections(*cols, off)
        conns = np.searchsorted(off, np.flatnonzero(icmp), side="right") - 1
        assert res.final[conns, 0].tolist() == [State.CLOSED] * n, name
        assert (res.event == Event.RECV_ICMP_ERROR).sum() == n, name


@pytest.mark.corpus
def test_every_connection_of_the_zeek_corpus(zeek_corpus: Path) -> None:
    counts = {p.name: compare_capture(p) for p in sorted(zeek_corpus.glob("*.pcap*"))}
    assert len(counts) >= 40
    assert sum(counts.values()) == 106, counts  # every tcp.stream


# ---------------------------------------------------------------------------------------
# hand-built edge cases
# ---------------------------------------------------------------------------------------


def _simultaneous_open(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(R, SYN, dt=10)
    cap.seg(C, SYN | ACK, seq=1000)
    cap.seg(R, SYN | ACK, seq=50000)
    cap.seg(C, ACK)


def _simultaneous_close(cap: Cap) -> None:
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, FIN | ACK, ack=1001, dt=10_000)
    cap.seg(C, ACK)
    cap.seg(R, ACK)


def _missed_syn_ack(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(C, ACK, ack=50001)
    cap.seg(C, ACK | PSH, 10, ack=50001)
    cap.seg(C, FIN | ACK, ack=50001)


def _missed_syn_ack_server_talks(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(R, ACK | PSH, 100, seq=50001, ack=1001)
    cap.seg(C, ACK, ack=50101)


def _refused(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(C, SYN, seq=1000, dt=SEC)
    cap.seg(R, RST | ACK, seq=0, ack=1001)


def _rst_while_listening(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(C, RST, seq=1001)  # the responder, still in LISTEN, ignores it
    cap.seg(R, SYN | ACK, ack=1001)


def _fin_resent_in_time_wait(cap: Cap) -> None:
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, ACK)
    sfin = cap.seg(R, FIN | ACK)
    cap.seg(C, ACK)
    cap.seg(R, FIN | ACK, seq=cap.rows[sfin - 1][2], dt=200 * MS)
    cap.seg(C, ACK)


def _time_wait_expires_mid_capture(cap: Cap) -> None:
    cap.handshake()
    cap.seg(C, FIN | ACK)
    cap.seg(R, FIN | ACK)
    cap.seg(C, ACK)
    cap.seg(R, FIN | ACK, seq=cap.nxt[R] - 1, dt=61 * SEC)
    cap.seg(C, RST, dt=TIME_WAIT_NS)


def _mid_connection(cap: Cap) -> None:
    cap.seg(R, ACK | PSH, 500)
    cap.seg(C, ACK)
    cap.seg(C, FIN | ACK)
    cap.seg(R, FIN | ACK)
    cap.seg(C, ACK)


def _starts_with_syn_ack(cap: Cap) -> None:
    cap.seg(R, SYN | ACK, ack=1001)
    cap.seg(C, ACK)
    cap.seg(C, ACK | PSH, 10)
    cap.seg(R, RST | ACK)


def _lost_fin(cap: Cap) -> None:
    cap.handshake()
    cap.seg(C, FIN | PSH | ACK, 31)
    cap.seg(R, ACK, ack=cap.nxt[C] - 1)
    sfin = cap.seg(R, FIN | PSH | ACK, 31, ack=cap.nxt[C] - 1, dt=200 * SEC)
    for _ in range(3):
        cap.seg(R, FIN | PSH | ACK, 31, seq=cap.rows[sfin - 1][2], ack=cap.nxt[C] - 1, dt=SEC)


def _wraparound(cap: Cap) -> None:
    cap.handshake()
    cap.seg(C, ACK | PSH, 4)
    cap.seg(C, FIN | ACK)
    cap.seg(R, ACK, ack=0xFFFFFFFF)
    cap.seg(R, ACK, ack=0)


def _syn_only(cap: Cap) -> None:
    cap.seg(C, SYN)


def _icmp_ends_connect(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(C, ICMP_ERROR_ROW)


def _icmp_soft_then_connected(cap: Cap) -> None:
    cap.seg(C, SYN)
    cap.seg(C, ICMP_ERROR_ROW)
    cap.seg(R, ICMP_ERROR_ROW)
    cap.seg(C, SYN, seq=1000, dt=SEC)
    cap.seg(R, SYN | ACK, ack=1001)
    cap.seg(C, ICMP_ERROR_ROW)
    cap.seg(C, ACK)


EDGE_CASES: dict[str, Callable[[Cap], None]] = {
    "simultaneous-open": _simultaneous_open,
    "simultaneous-close": _simultaneous_close,
    "missed-syn-ack": _missed_syn_ack,
    "missed-syn-ack-server-talks": _missed_syn_ack_server_talks,
    "refused": _refused,
    "rst-while-listening": _rst_while_listening,
    "fin-resent-in-time-wait": _fin_resent_in_time_wait,
    "time-wait-expires-mid-capture": _time_wait_expires_mid_capture,
    "mid-connection": _mid_connection,
    "starts-with-syn-ack": _starts_with_syn_ack,
    "lost-fin": _lost_fin,
    "wraparound": _wraparound,
    "syn-only": _syn_only,
    "icmp-ends-connect": _icmp_ends_connect,
    "icmp-soft-then-connected": _icmp_soft_then_connected,
}


_EMPTY: Cols = [
    np.zeros(0, dt)
    for dt in (np.uint8, np.uint16, np.uint32, np.uint32, np.uint32, np.int64, np.uint64)
]


def _batch(caps: list[Cap]) -> tuple[Cols, list[int]]:
    """Many connections as one CSR batch (an empty Cap is a connection without packets)."""
    parts = [cap.columns() if cap.rows else _EMPTY for cap in caps]
    cols: Cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    offsets = np.r_[0, np.cumsum([len(c.rows) for c in caps])].tolist()
    return cols, offsets


def _edge_cap(name: str) -> Cap:
    isn = (U32 - 5, 7) if name == "wraparound" else (1000, 50000)
    cap = Cap(isn=isn)
    EDGE_CASES[name](cap)
    return cap


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case(name: str) -> None:
    cap = _edge_cap(name)
    cols, offsets = _batch([cap])
    compare(cols, offsets)
    last = cap.rows[-1][5]
    for end in (last, last + TIME_WAIT_NS - 1, last + TIME_WAIT_NS, last + 10 * TIME_WAIT_NS):
        compare(cols, offsets, end_ns=end)


def test_edge_cases_batched_with_empty_connections_and_a_small_buffer() -> None:
    caps = [_edge_cap(n) for n in sorted(EDGE_CASES)]
    caps = [Cap(), *caps[:5], Cap(), *caps[5:], Cap()]
    cols, offsets = _batch(caps)
    assert compare(cols, offsets) == len(caps)
    # a timeline buffer of 2 steps grows while the connections are run: same result
    off = np.asarray(offsets, np.int64)
    end = int(cols[5].max()) + TIME_WAIT_NS
    small = run_connections(*cols, off, end_ns=end, steps_hint=2)
    full = run_connections(*cols, off, end_ns=end)
    for a, b in zip(small, full, strict=True):
        assert np.array_equal(a, b)
    empty = run_connections(*cols, off)
    assert empty.start[0].tolist() == [State.CLOSED, State.CLOSED]
    assert _steps(empty, 0, 0) == [(State.CLOSED, 0, 0, -1)]


def test_per_connection_end_times() -> None:
    caps = [_edge_cap("fin-resent-in-time-wait") for _ in range(3)]
    cols, offsets = _batch(caps)
    last = [cap.rows[-1][5] for cap in caps]
    ends = np.array([-1, last[1] + TIME_WAIT_NS, last[2] + 1], np.int64)
    res = run_connections(*cols, np.asarray(offsets, np.int64), end_ns=ends)
    for c, cap in enumerate(caps):
        _check(res, c, cap.run(end_ns=None if ends[c] < 0 else int(ends[c])))
    assert res.final[:, 0].tolist() == [State.TIME_WAIT, State.CLOSED, State.TIME_WAIT]


# ---------------------------------------------------------------------------------------
# random segment sequences
# ---------------------------------------------------------------------------------------


def test_random_connections() -> None:
    """Seeded random segments, seq/ack near each side's own numbers, gaps up to minutes:
    every path of derive_events and every cell of the tables gets exercised."""
    rng = np.random.default_rng(9293)
    choices = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN, RST, RST | ACK, FIN | PSH | ACK]
    choices.append(ICMP_ERROR_ROW)  # never first: an error quotes a segment sent before it
    caps = []
    for _ in range(3000):
        cap = Cap(isn=(int(rng.integers(0, U32 + 1)), int(rng.integers(0, U32 + 1))))
        for k in range(int(rng.integers(1, 14))):
            d = int(rng.integers(0, 2))
            fl = choices[int(rng.integers(0, len(choices) - (k == 0)))]
            data = int(rng.choice([0, 0, 1, 100]))
            dt = int(rng.choice([MS, SEC, 59 * SEC, 61 * SEC]))
            seq = None if rng.random() < 0.8 else (cap.nxt[d] - int(rng.integers(0, 3))) & U32
            ack = None if rng.random() < 0.7 else (cap.nxt[1 - d] - int(rng.integers(0, 3))) & U32
            cap.seg(d, fl, data, dt=dt, seq=seq, ack=ack)
        caps.append(cap)
    cols, offsets = _batch(caps)
    assert compare(cols, offsets) == len(caps)
    ends = [cap.rows[-1][5] + int(rng.choice([0, 30 * SEC, TIME_WAIT_NS])) for cap in caps]
    res = run_connections(*cols, np.asarray(offsets, np.int64), end_ns=np.array(ends))
    for c, cap in enumerate(caps):
        _check(res, c, cap.run(end_ns=ends[c]))
    # every state is reached, and misfits are counted
    assert set(res.state.tolist()) == {int(s) for s in State}
    assert res.unexpected.sum() > 0
    assert (res.event == Event.RECV_ICMP_ERROR).sum() > 0
