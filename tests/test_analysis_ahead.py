"""`Capture(..., analyse_ahead=True)` works out the analysis flags on a thread of its own while
the capture is set up and the first rules run: what `flag` then gives must be the analysis of
the whole capture (`tcpwhy.tcp.analysis.analyze`, the one the tshark reference tests check) on
every row the rules read, on real captures; and a failure in that thread reaches the caller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import RST, SYN, PacketTable
from tcpwhy.diagnose import context
from tcpwhy.diagnose.context import Capture
from tcpwhy.errors import TcpwhyError
from tcpwhy.tcp.analysis import FLAGS, analyze
from tcpwhy.tcp.streams import StreamTracker

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _check(table: PacketTable, name: str) -> int:
    """Rows with a flag set that were compared (the contract: rows without SYN or RST)."""
    want = analyze(table, StreamTracker().feed(table)).bits
    ahead = Capture(table, np.zeros(len(table), np.int16), [name], analyse_ahead=True)
    plain = Capture(table, np.zeros(len(table), np.int16), [name])
    rows = (table["flags"] & (SYN | RST)) == 0
    for flag in FLAGS:
        bit = 1 << FLAGS.index(flag)
        expect = (want & bit) != 0
        assert np.array_equal(ahead.flag(flag)[rows], expect[rows]), (name, flag)
        assert np.array_equal(plain.flag(flag)[rows], expect[rows]), (name, flag)
    return int(((want != 0) & rows).sum())


def _tables(paths: list[Path]) -> list[tuple[PacketTable, str]]:
    out = []
    for p in paths:
        try:
            t = read_table(str(p))
        except TcpwhyError:
            continue
        if len(t):
            out.append((t, p.name))
    return out


def test_lab_captures() -> None:
    tables = _tables(sorted(LAB.glob("*.pcap")))
    assert len(tables) > 10
    # the lab's incidents set flags (retransmissions, keep-alives, zero windows, dup ACKs)
    assert sum(_check(t, name) for t, name in tables) > 30


def test_zeek_captures(zeek_corpus: Path) -> None:
    tables = _tables(sorted(zeek_corpus.glob("*.pcap")) + sorted(zeek_corpus.glob("*.trace")))
    assert len(tables) > 10
    assert sum(_check(t, name) for t, name in tables) > 100


def test_failure_in_the_thread_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    table = read_table(str(LAB / "zero-window.pcap"))

    def boom(*_: object) -> np.ndarray:
        raise MemoryError("no room for the analysis")

    monkeypatch.setattr(context, "_analysis_bits", boom)
    cap = Capture(table, np.zeros(len(table), np.int16), ["zero-window.pcap"], analyse_ahead=True)
    with pytest.raises(MemoryError, match="no room"):
        cap.flag("zero_window")


def test_empty_capture() -> None:
    table = read_table(str(LAB / "zero-window.pcap")).take(np.zeros(0, np.int64))
    for ahead in (True, False):
        cap = Capture(table, np.zeros(0, np.int16), ["empty"], analyse_ahead=ahead)
        assert cap.flag("zero_window").shape == (0,)
