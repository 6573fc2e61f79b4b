"""`Capture` keeps each stream's two sequence bases instead of a relative number per packet,
and each stream's conversation instead of each packet's: what it gives back must be the
stream tracker's, row for row, on real captures
(handshakes, port reuse, captures that start mid-connection, ICMP-opened streams, and the
malformed ones of tcpdump's tests). Its per-stream views made on first use, in a leaner
form or by compiled passes (payload bytes, first FIN times, the counts per stream and side,
endpoints with constant columns broadcast, who reset first for the ending) must hold what
the plain whole-capture computations give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, RST, SYN, PacketTable, icmp_kept
from tcpwhy.diagnose.context import CLIENT, NO_FIN, SERVER, Capture, ending_codes
from tcpwhy.errors import TcpwhyError
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
CODES = Path(__file__).resolve().parent / "data" / "icmp" / "codes.pcap"


def _first_per_side(cap: Capture, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    out = np.full((cap.nstreams, 2), NO_FIN, np.int64)
    np.minimum.at(out, (cap.stream[mask], cap.side[mask]), cap.table["ts_ns"][mask])
    return out


def _ending_oracle(cap: Capture) -> npt.NDArray[np.int8]:
    """`ending_index`'s findings as they were worked out over every stream (who reset
    first as a two-column array of all streams), in the same codes."""
    syn_c = cap.n_syn[:, CLIENT] > 0
    answered = (cap.n_synack[:, SERVER] > 0) | (cap.n_pkts[:, SERVER] > 0)
    rst = cap.n_rst.sum(1) > 0
    refused = syn_c & (cap.n_synack[:, SERVER] == 0) & (cap.n_rst[:, SERVER] > 0)
    no_answer = syn_c & ~answered & (cap.n_pkts[:, CLIENT] == cap.n_syn[:, CLIENT])
    fins = (cap.n_fin > 0).sum(1)
    icmp = cap.icmp.syn_err & (cap.n_synack[:, SERVER] == 0) & ~refused
    first_rst = _first_per_side(cap, (cap.table["flags"] & RST) != 0)
    by_client = first_rst[:, CLIENT] <= first_rst[:, SERVER]
    return ending_codes(rst, refused, no_answer, fins, icmp, by_client)


def _check_views(cap: Capture, t: PacketTable, name: str) -> None:
    """The per-stream views made on first use or in a leaner form against the plain
    whole-capture computations."""
    key = cap.stream * 2 + cap.side
    plen = t["payload_len"].astype(np.float64)
    want_bytes = np.bincount(key, weights=plen, minlength=2 * cap.nstreams).reshape(-1, 2)
    assert np.array_equal(cap.bytes, want_bytes), name
    fin = (t["flags"] & (FIN | RST)) == FIN
    assert np.array_equal(cap.first_fin_ns, _first_per_side(cap, fin)), name
    assert np.array_equal(cap.ending_index(), _ending_oracle(cap)), name
    # the per-stream counts, each as a bincount of its rows
    f = t["flags"]
    kind, rst = f & (SYN | ACK | RST), (f & RST) != 0
    for got, mask in (
        (cap.n_pkts, np.ones(len(t), np.bool_)),
        (cap.n_syn, kind == SYN),
        (cap.n_synack, kind == (SYN | ACK)),
        (cap.n_fin, ((f & FIN) != 0) & ~rst),
        (cap.n_rst, rst),
        (cap.n_data, (t["payload_len"] > 0) & ~rst),
    ):
        want = np.bincount(key[mask], minlength=2 * cap.nstreams).reshape(-1, 2)
        longest = int((cap.ends - cap.starts).max()) if cap.nstreams else 0
        small = np.int16 if longest <= 16383 else np.int32
        assert got.dtype == small and np.array_equal(got, want), name
    first = cap.order[cap.starts]
    from_client = cap.side[first] == CLIENT
    ep = cap.endpoints
    for got, a, b in zip(
        ep,
        ("src_hi", "src_lo", "dst_hi", "dst_lo", "dport"),
        ("dst_hi", "dst_lo", "src_hi", "src_lo", "sport"),
        strict=True,
    ):
        want = np.where(from_client, t[a][first], t[b][first])
        assert np.array_equal(got, want), (name, a)
        assert not got.flags.writeable, (name, a)


def _check(path: Path) -> int:
    """Rows compared (0 when the file is not a capture tcpwhy reads)."""
    try:
        table = read_table(str(path))
    except TcpwhyError:
        return 0
    return _check_table(table, path.name)


def _check_table(table: PacketTable, name: str) -> int:
    if not len(table):
        return 0
    want = StreamTracker().feed(table)
    cap = Capture(table, np.zeros(len(table), np.int16), [name])
    rows = np.arange(len(table))
    assert np.array_equal(cap.rel_seq(rows), want["rel_seq"]), name
    assert np.array_equal(cap.rel_ack(rows), want["rel_ack"]), name
    # a stream is one conversation's: its conversation is kept once
    assert np.array_equal(cap.stream_conv[cap.stream], want["conv"]), name
    # one row at a time, as a rule's `Conn.at` reads it
    for r in rows[:: max(1, len(rows) // 50)]:
        assert cap.rel_seq(rows[r : r + 1])[0] == want["rel_seq"][r], (name, r)
    _check_views(cap, table, name)
    # with its address columns one value per stream (as the engine makes them), the
    # endpoints come from those, not from the compiled pass over plain columns
    plain = table.take(np.ones(len(table), np.bool_))
    plain.icmp = table.icmp
    other = Capture(plain, np.zeros(len(table), np.int16), [name])
    if other.compact_addresses():
        for got, want in zip(other.endpoints, cap.endpoints, strict=True):
            assert np.array_equal(got, want), name
    return len(rows)


def test_endpoints_from_compact_columns_are_checked() -> None:
    """The comparison above runs: the lab captures' streams compact."""
    table = read_table(str(LAB / sorted(p.name for p in LAB.glob("*.pcap"))[0]))
    assert Capture(table, np.zeros(len(table), np.int16), ["lab"]).compact_addresses()


def test_streams_numbered_again_past_an_icmp_only_stream() -> None:
    """An ICMP error about a connection the capture has no TCP packet of opens a stream of
    its own (as in Wireshark) with no TCP row, and `Capture` numbers the streams again
    without that gap: the per-stream bases and conversations follow the new numbers."""
    table = read_table(str(CODES))
    tracker = StreamTracker()
    got = tracker.feed(table)
    assert tracker.icmp_out is not None and table.icmp is not None
    opened = tracker.icmp_out["stream"]
    gone = int(opened[opened >= 0][0])  # the TCP rows of an error's stream dropped
    keep = got["stream"] != gone
    t = table.take(keep)
    t.icmp = icmp_kept(table, keep, np.ones(len(table.icmp), np.bool_))
    assert _check_table(t, f"codes.pcap without stream {gone}'s TCP rows") >= 30
    cap = Capture(t, np.zeros(len(t), np.int16), ["codes.pcap"])
    raw = StreamTracker().feed(t)["stream"]
    assert not np.array_equal(cap.stream, raw)  # numbered again: the case this covers


def test_lab_captures() -> None:
    files = sorted(LAB.glob("*.pcap"))
    assert len(files) >= 10
    assert sum(_check(p) for p in files) > 1000


@pytest.mark.corpus
def test_zeek_traces(zeek_corpus: Path) -> None:
    files = sorted(p for p in zeek_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert sum(_check(p) for p in files) > 10_000


@pytest.mark.corpus
def test_tcpdump_tests_captures(tcpdump_corpus: Path) -> None:
    files = sorted(p for p in tcpdump_corpus.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert len(files) >= 500
    assert sum(_check(p) > 0 for p in files) >= 100


@pytest.mark.parametrize("longest", [1, 16383, 16384, 70000])
def test_side_counts_stay_exact_past_int16(longest: int) -> None:
    """The counts per stream and side are int16 only while any two of them added fit: a stream of `longest` packets, all SYNs from one side, and a short stream, each
    count against a bincount."""
    from tcpwhy.diagnose.context import _side_counts

    n = longest + 3
    stream = np.zeros(n, np.int64)
    stream[longest:] = 1
    side = np.zeros(n, np.int8)
    side[-1] = 1
    flags = np.full(n, SYN, np.uint8)
    flags[-1] = SYN | ACK
    plen = np.zeros(n, np.uint32)
    got = _side_counts(flags, plen, stream, side, 2, longest)
    assert got[0].dtype == (np.int16 if longest <= 16383 else np.int32)
    key = stream * 2 + side
    assert np.array_equal(got[0].ravel(), np.bincount(key, minlength=4))  # packets
    assert np.array_equal(got[1].ravel(), np.bincount(key[flags == SYN], minlength=4))
    assert int(got[0][0, 0] + got[1][0, 0]) == 2 * longest  # two counts of one stream added
