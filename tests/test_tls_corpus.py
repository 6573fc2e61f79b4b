"""TLS filter fields and slices of the ``tls`` protocol against tshark 4.0 on the Zeek
corpus traces that carry TLS.

tshark decides TLS by port, heuristics and STARTTLS; tcpwhy by content (a stream whose
first payload is a TLS handshake record). The comparison is made on the streams tcpwhy
calls TLS (``(F) && tcp.stream in {S}``, evaluated by both): on them every filter must
select tshark's frames. tests/data/tls/corpus.expected.tsv holds tshark's frames for
every filter of corpus_filters.txt (made by tests/data/tls/generate_corpus.sh, which names
the streams). Those traces hold records cut across segments (a certificate over three
segments, a record completed in a segment that starts the next one), so the ``tls``
items of a segment that begins a record, of a reassembled record and of the rest after
it are all compared, with their bytes. The other traces tshark finds TLS in start with
something else on their streams (IRC/XMPP STARTTLS, MySQL's greeting, an HTTP CONNECT)
or are read as TLS by tshark's heuristics only: `test_tls_traces` pins which.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable
from tcpwhy.filter import FilterContext, compile_filter

REFS = Path(__file__).resolve().parent / "data" / "tls"
FILTERS = (REFS / "corpus_filters.txt").read_text().splitlines()
EXPECTED = [
    line.split("\t") for line in (REFS / "corpus.expected.tsv").read_text().splitlines() if line
]
TLS_TRACES = sorted({trace for trace, _, _, _ in EXPECTED})
# the other Zeek traces where tshark finds TLS
TSHARK_ONLY = (
    "http-connect-with-header",
    "irc-starttls",
    "mysql-encrypted",
    "mysql-encrypted-aws-rds-tls-12",
    "ssh-basic",
    "tunnels-gre-aruba-amsdu",
    "xmpp-starttls",
)


@cache
def _table(path: str) -> PacketTable:
    return read_table(path)


def _tls_streams(path: str) -> list[int]:
    t = _table(path)
    ctx = FilterContext(t)
    return [int(s) for s in np.unique(ctx.streams["stream"][compile_filter("tls").mask(t, ctx)])]


def test_reference_is_complete() -> None:
    assert TLS_TRACES == ["ftp-gridftp", "pppoe-over-qinq", "tunnels-gtp-opt-header"]
    for trace in TLS_TRACES:
        assert [f for t, _, f, _ in EXPECTED if t == trace] == FILTERS
    # most filters select something somewhere (not a comparison of empty selections)
    chosen = {f for _, _, f, frames in EXPECTED if frames}
    assert len(chosen) >= len(FILTERS) - 2


def test_tls_traces(zeek_corpus: Path) -> None:
    """tcpwhy's TLS streams are the reference's, and none in tshark's other TLS traces."""
    for trace in TLS_TRACES:
        want = {s for t, s, _, _ in EXPECTED if t == trace}
        assert {",".join(map(str, _tls_streams(str(zeek_corpus / f"{trace}.pcap"))))} == want
    for name in TSHARK_ONLY:
        assert not _tls_streams(str(zeek_corpus / f"{name}.pcap")), name


@pytest.mark.parametrize(("trace", "streams", "flt", "frames"), EXPECTED, ids=lambda v: v[:40])
def test_filter_matches_tshark(
    zeek_corpus: Path, trace: str, streams: str, flt: str, frames: str
) -> None:
    path = str(zeek_corpus / f"{trace}.pcap")
    t = _table(path)
    full = f"({flt}) && tcp.stream in {{{streams}}}"
    got = [int(f) for f in t["frame"][compile_filter(full).mask(t, FilterContext(t))].tolist()]
    assert got == [int(x) for x in frames.split(",") if x]


def test_items_of_reassembled_records(zeek_corpus: Path) -> None:
    """The items tshark shows where records span segments (frame numbers read with tshark
    4.0): a segment beginning a record is one item over its bytes; the segment completing
    it gives the reassembled record, then the rest of the segment."""
    path = str(zeek_corpus / "ftp-gridftp.pcap")
    t = _table(path)
    ctx = FilterContext(t)

    def frames(flt: str) -> list[int]:
        return [int(f) for f in t["frame"][compile_filter(flt).mask(t, ctx)].tolist()]

    # 43: a whole 53-byte record and the start of a 2333-byte one; 44 completes it (2338
    # bytes with its header) and holds a whole 13-byte record (18); 47 begins a 1791-byte
    # record that 48 completes (1796), with four more records after it (197 bytes)
    assert frames("len(tls) == 1448") == [43, 47]
    assert frames("len(tls) == 2338") == frames("len(tls) == 18") == [44]
    assert frames("len(tls) == 1796") == frames("len(tls) == 197") == [48]
    assert frames("count(tls) == 2") == [44, 48]
    assert frames("tls[5] == 0x0b") == [44, 47, 48]  # Certificates: begun, reassembled
    # 53 starts at a record boundary but with text: tshark's TLS declines it
    assert 53 not in frames("tls") and 53 in frames("tcp.len > 0")
