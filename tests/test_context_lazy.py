"""`Capture`'s per-stream views made on first use or in a leaner form (payload bytes, first
FIN times, endpoints with constant columns broadcast, who reset first for the ending) hold
what the plain whole-capture computations give, on real captures: the lab's, Zeek's and
the malformed ones of tcpdump's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import FIN, RST
from tcpwhy.diagnose.context import CLIENT, NO_FIN, SERVER, Capture
from tcpwhy.errors import TcpwhyError

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _first_per_side(cap: Capture, mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    out = np.full((cap.nstreams, 2), NO_FIN, np.int64)
    np.minimum.at(out, (cap.stream[mask], cap.side[mask]), cap.table["ts_ns"][mask])
    return out


def _ending_oracle(cap: Capture) -> npt.NDArray[np.int8]:
    """`ending_index` as it was written over every stream."""
    syn_c = cap.n_syn[:, CLIENT] > 0
    answered = (cap.n_synack[:, SERVER] > 0) | (cap.n_pkts[:, SERVER] > 0)
    rst = cap.n_rst.sum(1) > 0
    refused = syn_c & (cap.n_synack[:, SERVER] == 0) & (cap.n_rst[:, SERVER] > 0)
    no_answer = syn_c & ~answered & (cap.n_pkts[:, CLIENT] == cap.n_syn[:, CLIENT])
    fins = (cap.n_fin > 0).sum(1)
    icmp = cap.icmp.syn_err & (cap.n_synack[:, SERVER] == 0) & ~refused
    first_rst = _first_per_side(cap, (cap.table["flags"] & RST) != 0)
    by_client = first_rst[:, CLIENT] <= first_rst[:, SERVER]
    out = np.full(cap.nstreams, 7, np.int8)
    out[~rst & ~no_answer & (fins == 1)] = 6
    out[~rst & ~no_answer & (fins == 2)] = 5
    out[rst & ~refused] = 4
    out[rst & ~refused & by_client] = 3
    out[no_answer & ~rst & ~icmp] = 2
    out[icmp] = 1
    out[refused] = 0
    return out


def _check(path: Path) -> int:
    """Streams compared (0 when the file is not a capture tcpwhy reads)."""
    try:
        t = read_table(str(path))
    except TcpwhyError:
        return 0
    if not len(t):
        return 0
    cap = Capture(t, np.zeros(len(t), np.int16), [path.name])
    key = cap.stream * 2 + cap.side
    plen = t["payload_len"].astype(np.float64)
    want_bytes = np.bincount(key, weights=plen, minlength=2 * cap.nstreams).reshape(-1, 2)
    assert np.array_equal(cap.bytes, want_bytes), path.name
    fin = (t["flags"] & (FIN | RST)) == FIN
    assert np.array_equal(cap.first_fin_ns, _first_per_side(cap, fin)), path.name
    assert np.array_equal(cap.ending_index(), _ending_oracle(cap)), path.name
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
        assert np.array_equal(got, want), (path.name, a)
        assert not got.flags.writeable, (path.name, a)
    return cap.nstreams


def test_lab_captures() -> None:
    files = sorted(LAB.glob("*.pcap"))
    assert len(files) >= 10
    assert sum(_check(p) for p in files) > 50


@pytest.mark.corpus
def test_zeek_traces(zeek_corpus: Path) -> None:
    files = sorted(p for p in zeek_corpus.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert sum(_check(p) for p in files) > 50


@pytest.mark.corpus
def test_tcpdump_tests_captures(tcpdump_corpus: Path) -> None:
    files = sorted(p for p in tcpdump_corpus.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    assert len(files) >= 500
    assert sum(_check(p) > 0 for p in files) >= 100
