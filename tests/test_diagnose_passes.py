"""Whole-capture passes of the rules, made leaner, against the plain computations they
replace, on real captures (the lab's incidents, Zeek's traces): the same streams picked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.diagnose.context import CLIENT, Capture
from tcpwhy.diagnose.simultaneous_close import crossed_fins
from tcpwhy.errors import TcpwhyError
from tcpwhy.tcp.seq import seq_geq

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _crossed_fins_plain(cap: Capture) -> npt.NDArray[np.bool_]:
    """Per stream: both sides sent a FIN and neither first FIN acknowledges the other's,
    with a table of first FIN rows for every stream."""
    t = cap.table
    fins = np.flatnonzero((t["flags"] & (FIN | RST)) == FIN)
    first = np.full((cap.nstreams, 2), len(t), np.int64)
    np.minimum.at(first, (cap.stream[fins], cap.side[fins]), fins)
    both = np.flatnonzero((first < len(t)).all(1))
    rows = first[both]
    flags = t["flags"][rows].astype(np.int64)
    ack = t["ack"][rows].astype(np.int64)
    end = t["seq"][rows].astype(np.int64) + t["payload_len"][rows] + ((flags & SYN) > 0) + 1

    def acks(a: int, b: int) -> npt.NDArray[np.bool_]:
        return ((flags[:, a] & ACK) > 0) & seq_geq(ack[:, a], end[:, b])

    out = np.zeros(cap.nstreams, np.bool_)
    out[both[~acks(0, 1) & ~acks(1, 0)]] = True
    return out


def _check(files: list[Path]) -> tuple[int, int]:
    """(captures compared, streams with crossed FINs among them)."""
    n = crossed = 0
    for p in files:
        try:
            table = read_table(str(p))
        except TcpwhyError:
            continue
        if not len(table):
            continue
        cap = Capture(table, np.zeros(len(table), np.int16), [p.name])
        got = crossed_fins(cap)
        assert np.array_equal(got, _crossed_fins_plain(cap)), p.name
        n += 1
        crossed += int(got.sum())
    return n, crossed


def test_lab_captures() -> None:
    n, crossed = _check(sorted(LAB.glob("*.pcap")))
    assert n >= 10 and crossed >= 1  # the simultaneous-close incident is among them


@pytest.mark.corpus
def test_zeek_traces(zeek_corpus: Path) -> None:
    n, _ = _check(sorted(p for p in zeek_corpus.iterdir() if p.suffix in (".pcap", ".pcapng")))
    assert n >= 20


def _first_rows_plain(cap: Capture, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    out = np.full(cap.nstreams, -1, np.int64)
    idx = np.flatnonzero(mask)
    out[cap.stream[idx[::-1]]] = idx[::-1]
    return out


def test_first_row_of_each_stream_where_a_mask_holds() -> None:
    """Each stream's first row of a kind (`Capture.first_rows`, compiled: syn-flood's first
    SYN and SYN-ACK, the TLS rules' first payload): the rows numpy's reversed assignment
    gives, for the flags and payloads asked and for random rows."""
    rng = np.random.default_rng(5)
    seen = 0
    for p in sorted(LAB.glob("*.pcap")):
        table = read_table(str(p))
        cap = Capture(table, np.zeros(len(table), np.int16), [p.name])
        kind = table["flags"] & (SYN | ACK | RST)
        data = (table["payload_len"] > 0) & ((table["flags"] & RST) == 0)
        for mask in (kind == SYN, kind == (SYN | ACK), data, rng.random(len(table)) < 0.1):
            got = cap.first_rows(mask)
            assert got.dtype == np.int32
            assert np.array_equal(got, _first_rows_plain(cap, mask)), p.name
            seen += int((got >= 0).sum())
    assert seen > 100


def test_first_client_payload_of_each_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """The servers' names start from each stream's first client payload
    (`server_names._first_client_payloads`, compiled): the rows a sort of each block's
    streams found, on the lab's captures and in blocks of a few rows."""
    from tcpwhy.tcp import server_names

    seen = 0
    for p in sorted(LAB.glob("*.pcap")):
        table = read_table(str(p))
        cap = Capture(table, np.zeros(len(table), np.int16), [p.name])
        client = cap.side == CLIENT
        want = np.full(cap.nstreams, -1, np.int64)
        for lo in range(0, len(table), 5):
            rows = server_names._client_payloads(table, client, lo, lo + 5)
            st, idx = np.unique(cap.stream[rows], return_index=True)
            new = want[st] < 0
            want[st[new]] = rows[idx[new]]
        for block in (3, 1 << 20):
            monkeypatch.setattr(server_names, "_PAYLOAD_ROWS", block)
            got = server_names._first_client_payloads(table, cap.stream, client, cap.nstreams)
            assert got.dtype == np.int64 and np.array_equal(got, want), p.name
        seen += int((want >= 0).sum())
    assert seen > 50  # streams with a client payload, over the lab captures
