"""TLS display filter fields against tshark 4.0: the same frames on the TLS lab recordings.

tests/data/tls/filters.expected.tsv holds, for every filter of tests/data/tls/filters.txt
(fields, and slices of the ``tls`` protocol's bytes) and every capture, the frames tshark
selected (made by tests/data/tls/generate_filters.sh;
the TLS recordings decoded as TLS on the lab's port 8080 with ``-d tcp.port==8080,tls``,
the cleartext one without; clean-tls-resegmented.pcap is clean-tls.pcap with the server's
first flight cut into three segments by tests/data/tls/resegment.py, one cut inside a
record header: records reassembled across segments; clean-tls-first-header-cut.pcap cuts
each direction's first segment inside the first header, into up to four segments).
tcpwhy tells TLS by content on any port, tshark by port: on these captures the two agree, which `test_tls_streams_are_the_decode_as_streams` checks,
so every filter must select exactly tshark's frames.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable
from tcpwhy.filter import FilterContext, compile_filter

HERE = Path(__file__).resolve().parent
REFS = HERE / "data" / "tls"
LAB = HERE.parent / "src" / "tcpwhy" / "data" / "lab"
EXPECTED = [
    line.split("\t") for line in (REFS / "filters.expected.tsv").read_text().splitlines() if line
]
FILTERS = (REFS / "filters.txt").read_text().splitlines()
CAPTURES = sorted({cap for cap, _, _ in EXPECTED})


def _path(name: str) -> Path:
    return LAB / name if (LAB / name).exists() else REFS / name


@cache
def _table(name: str) -> PacketTable:
    return read_table(str(_path(name)))


def _frames(name: str, flt: str) -> list[int]:
    t = _table(name)
    m = compile_filter(flt).mask(t, FilterContext(t))
    return [int(f) for f in t["frame"][m].tolist()]


def test_reference_is_complete() -> None:
    """Every filter on every capture, and the alert and cleartext cases are in it."""
    assert len(CAPTURES) >= 5 and "clean.pcap" in CAPTURES
    assert len(EXPECTED) == len(CAPTURES) * len(FILTERS)
    for cap in CAPTURES:
        assert [f for c, f, _ in EXPECTED if c == cap] == FILTERS
    # the reference selects something for each field (a filter that never matches anything
    # would not test it)
    fields = [
        "tls.handshake.extensions_server_name",
        "tls.handshake.type",
        "tls.record.content_type",
        "tls.record.version",
        "tls.record.length",
        "tls.handshake.extensions_alpn_str",
        "tls.handshake.extension.type",
    ]
    for name in fields:
        assert any(f == name and frames for _, f, frames in EXPECTED), name
    # slices of the protocol's bytes select something too, and not every TLS frame
    tls_frames = {(c, fr) for c, f, fr in EXPECTED if f == "tls"}
    for flt in ("tls[0:1] == 16", "tls[0:1] == 17", "tls[5] == 1", "len(tls) < 30"):
        got = {(c, fr) for c, f, fr in EXPECTED if f == flt}
        assert any(fr for _, fr in got) and got != tls_frames, flt


@pytest.mark.parametrize(("capture", "flt", "frames"), EXPECTED, ids=lambda v: str(v)[:60])
def test_filter_matches_tshark(capture: str, flt: str, frames: str) -> None:
    want = [int(x) for x in frames.split(",") if x]
    assert _frames(capture, flt) == want


@pytest.mark.parametrize("capture", CAPTURES)
def test_tls_streams_are_the_decode_as_streams(capture: str) -> None:
    """tcpwhy's TLS streams (by content) are the ones tshark decodes as TLS (by the port
    the reference names): with payload, on port 8080 in the TLS recordings, none in the
    cleartext one."""
    t = _table(capture)
    ctx = FilterContext(t)
    stream = ctx.streams["stream"]
    tls = set(np.unique(stream[compile_filter("tls").mask(t, ctx)]).tolist())
    data = (t["payload_len"] > 0) & ((t["sport"] == 8080) | (t["dport"] == 8080))
    want = set(np.unique(stream[data]).tolist()) if "tls" in capture else set()
    assert tls == want and bool(want) == ("tls" in capture)


def test_icmp_rows_have_no_tls() -> None:
    """On an ICMP error table TLS fields are absent, as in tshark's quoted segment."""
    from tcpwhy.filter.fields import FIELDS

    names = [n for n in FIELDS if n == "tls" or n.startswith("tls.")]
    assert len(names) == 11
    t = _table("clean-tls.pcap")
    cols = dict(t.cols)
    cols["icmp_type"] = np.zeros(len(t), np.int64)
    fake = PacketTable(cols, t.data)
    ctx = FilterContext(fake, streams={"stream": np.zeros(len(t), np.int64)})
    for n in names:
        assert not compile_filter(n).mask(fake, ctx).any(), n
