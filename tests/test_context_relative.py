"""`Capture` keeps each stream's two sequence bases instead of a relative number per packet,
and each stream's conversation instead of each packet's: what it gives back must be the
stream tracker's, row for row, on real captures
(handshakes, port reuse, captures that start mid-connection, ICMP-opened streams, and the
malformed ones of tcpdump's tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable, icmp_kept
from tcpwhy.diagnose.context import Capture
from tcpwhy.errors import TcpwhyError
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
CODES = Path(__file__).resolve().parent / "data" / "icmp" / "codes.pcap"


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
    return len(rows)


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
