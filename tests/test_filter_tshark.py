"""Display filters against tshark 4.0: the same frames, or the same error message.

tests/data/filters/expected.json holds, for every filter of generate.py and
every capture (Zeek corpus traces and the shipped lab recordings), the frames
tshark selected, or the error tshark printed. It was made by
``python tests/data/filters/generate.py`` with
``tshark -n -2 -o tcp.calculate_timestamps:TRUE -r FILE -Y FILTER -T fields -e frame.number``
(two passes: analysis flags as Wireshark's GUI shows them).

tcpwhy's table holds TCP packets only, so tshark's frames are compared within
the frames tshark decodes as TCP. Every other difference is listed in
DOCUMENTED with its reason and counted exactly (frames tcpwhy misses plus
frames it adds), so a change in either direction fails the test.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import CaptureStats, PacketTable
from tcpwhy.filter import FilterContext, FilterError, compile_filter

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "src" / "tcpwhy" / "data"
EXPECTED: dict[str, Any] = json.loads((HERE / "data" / "filters" / "expected.json").read_text())
ENTRIES = {e["filter"]: e for e in EXPECTED["filters"]}

# Filters tshark 4.0 rejects but tcpwhy accepts, each with the accepted twin whose frames it must select.
EXTENSIONS = {
    "tcp.port in {80 443 8080}": (
        "tcp.port in {80, 443, 8080}",
        "whitespace-separated set elements (Wireshark 3.x syntax, the issue's example); "
        "tshark 4.0 requires commas",
    ),
}

# Error messages worded differently from tshark's, with the reason.
MESSAGE_DIFFERENCES: dict[str, str] = {}

_TSHARK_REASSEMBLY = (
    "tshark reassembles HTTP and reports a split message on the segment completing it; "
    "tcpwhy reads each segment's own payload start (docs/filters.md)"
)
_HTTP_PROTO = (
    "tshark marks `http` only on segments its HTTP dissector got after reassembly; "
    "tcpwhy marks every payload segment of an HTTP stream"
)
_SEGMENT_DATA = (
    "tshark shows tcp.segment_data only on segments its reassembly collected; "
    "tcpwhy treats every payload as segment data"
)
_INITIAL_RTT = (
    "tcpwhy.tcp.analysis leaves initial_rtt off the SYN-ACK, where tshark shows it "
    "(owned by the analysis module)"
)

# (filter, capture) -> (frames differing, reason). Counted exactly.
DOCUMENTED: dict[tuple[str, str], tuple[int, str]] = {
    ("http", "zeek/http-connect.pcap"): (2, _HTTP_PROTO),
    ("http", "zeek/http-concurrent-range-requests.pcap"): (14, _HTTP_PROTO),
    ("http", "zeek/http-no-crlf.pcap"): (1114, _HTTP_PROTO),
    ("http", "zeek/tunnels-teredo.pcap"): (3, _HTTP_PROTO),
    ("http", "zeek/vlan-mpls.pcap"): (6, _HTTP_PROTO),
    ("http", "data/lab/zero-window.pcap"): (13, _HTTP_PROTO),
    ("http", "data/lab/retransmission-timeout.pcap"): (8, _HTTP_PROTO),
    ("http", "data/lab/keepalive-dead-peer.pcap"): (2, _HTTP_PROTO),
    ("http", "data/lab/abortive-close.pcap"): (3, _HTTP_PROTO),
    ('tcp.segment_data contains "HTTP"', "zeek/http-connect.pcap"): (2, _SEGMENT_DATA),
    ('tcp.segment_data contains "HTTP"', "zeek/http-concurrent-range-requests.pcap"): (
        3,
        _SEGMENT_DATA,
    ),
    ('tcp.segment_data contains "HTTP"', "zeek/http-no-crlf.pcap"): (1, _SEGMENT_DATA),
    ('tcp.segment_data contains "HTTP"', "zeek/tunnels-teredo.pcap"): (2, _SEGMENT_DATA),
    ('tcp.segment_data contains "HTTP"', "zeek/vlan-mpls.pcap"): (2, _SEGMENT_DATA),
    ('tcp.segment_data contains "HTTP"', "data/demo-stale-keepalive.pcap"): (5, _SEGMENT_DATA),
    ("http.request", "zeek/http-no-crlf.pcap"): (10, _TSHARK_REASSEMBLY),
    ("http.request", "zeek/tunnels-teredo.pcap"): (2, _TSHARK_REASSEMBLY),
    ("http.request", "data/lab/abortive-close.pcap"): (1, _TSHARK_REASSEMBLY),
    ("http.response", "zeek/http-concurrent-range-requests.pcap"): (5, _TSHARK_REASSEMBLY),
    ("http.response", "zeek/http-no-crlf.pcap"): (8, _TSHARK_REASSEMBLY),
    ("http.response", "zeek/tunnels-teredo.pcap"): (2, _TSHARK_REASSEMBLY),
    ("http.response", "zeek/vlan-mpls.pcap"): (2, _TSHARK_REASSEMBLY),
    ('http.request.method == "POST"', "zeek/http-no-crlf.pcap"): (10, _TSHARK_REASSEMBLY),
    ('http.request.method == "POST"', "zeek/tunnels-teredo.pcap"): (2, _TSHARK_REASSEMBLY),
    ('http.request.method == "POST"', "data/lab/abortive-close.pcap"): (1, _TSHARK_REASSEMBLY),
    ("http.response.code == 200", "zeek/http-no-crlf.pcap"): (8, _TSHARK_REASSEMBLY),
    ("http.response.code == 200", "zeek/tunnels-teredo.pcap"): (2, _TSHARK_REASSEMBLY),
    ("http.response.code == 200", "zeek/vlan-mpls.pcap"): (2, _TSHARK_REASSEMBLY),
    ('http.host == "5.2.136.90"', "zeek/http-no-crlf.pcap"): (10, _TSHARK_REASSEMBLY),
    ('http.connection == "Keep-Alive"', "zeek/http-no-crlf.pcap"): (10, _TSHARK_REASSEMBLY),
    ('http.connection == "Keep-Alive"', "zeek/tunnels-teredo.pcap"): (4, _TSHARK_REASSEMBLY),
    ('http.connection == "Keep-Alive"', "zeek/vlan-mpls.pcap"): (2, _TSHARK_REASSEMBLY),
    ("tcp.analysis.initial_rtt", "zeek/http-connect.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/http-concurrent-range-requests.pcap"): (3, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/http-no-crlf.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/ftp-ipv6.pcap"): (6, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/tunnels-teredo.pcap"): (2, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/vlan-mpls.pcap"): (2, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "zeek/pop3-redis.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "data/demo-stale-keepalive.pcap"): (2, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "data/lab/zero-window.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "data/lab/retransmission-timeout.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "data/lab/keepalive-dead-peer.pcap"): (1, _INITIAL_RTT),
    ("tcp.analysis.initial_rtt", "data/lab/abortive-close.pcap"): (2, _INITIAL_RTT),
}


def _path(name: str, zeek: Path) -> Path:
    if name.startswith("zeek/"):
        return zeek / name.removeprefix("zeek/")
    return DATA / name.removeprefix("data/")


@cache
def _load(path: Path) -> tuple[PacketTable, FilterContext]:
    stats = CaptureStats()
    table = read_table(str(path), stats)
    return table, FilterContext(table, first_ts_ns=stats.first_ts_ns)


def _ours(flt_text: str, name: str, zeek: Path) -> set[int]:
    table, ctx = _load(_path(name, zeek))
    mask = compile_filter(flt_text).mask(table, ctx)
    return {int(x) for x in table["frame"][mask]}


def _differences(flt_text: str, zeek: Path) -> dict[str, tuple[set[int], set[int]]]:
    entry = ENTRIES[flt_text]
    out = {}
    for name, frames in entry["frames"].items():
        table, _ = _load(_path(name, zeek))
        ours = _ours(flt_text, name, zeek)
        in_table = {int(x) for x in table["frame"]}
        want = set(frames) & set(EXPECTED["tcp_frames"][name]) & in_table
        missed, extra = want - ours, ours - want
        if missed or extra:
            out[name] = (missed, extra)
    return out


SELECTING = [e["filter"] for e in EXPECTED["filters"] if "error" not in e]
FAILING = [
    e["filter"] for e in EXPECTED["filters"] if "error" in e and e["filter"] not in EXTENSIONS
]


@pytest.fixture(scope="module")
def zeek(zeek_corpus: Path) -> Path:
    return zeek_corpus


def test_reference_is_big_enough() -> None:
    assert len(SELECTING) >= 60
    assert len(FAILING) >= 15
    assert len(EXPECTED["tcp_frames"]) >= 12
    for seed in (
        "tcp.port == 4542 or tcp.port == 4528",
        "ip.src == 192.168.1.23",
        "tcp.port in {80 443 8080}",
        'http.request.method == "GET"',
        'tcp.segment_data contains "202005190001"',
    ):
        assert seed in ENTRIES


@pytest.mark.corpus
@pytest.mark.parametrize("text", SELECTING)
def test_same_frames_as_tshark(text: str, zeek: Path) -> None:
    diffs = _differences(text, zeek)
    unexplained = {}
    for name, (missed, extra) in diffs.items():
        doc = DOCUMENTED.get((text, name))
        n = len(missed) + len(extra)
        if doc is None or doc[0] != n:
            unexplained[name] = (sorted(missed)[:20], sorted(extra)[:20], n)
    stale = [k for k in DOCUMENTED if k[0] == text and k[1] not in diffs]
    assert not unexplained, f"differences from tshark (missed, extra, count): {unexplained}"
    assert not stale, f"documented differences that no longer occur: {stale}"


@pytest.mark.corpus
@pytest.mark.parametrize("text", sorted(EXTENSIONS))
def test_extensions_match_their_tshark_twin(text: str, zeek: Path) -> None:
    twin, _reason = EXTENSIONS[text]
    assert "error" in ENTRIES[text], "tshark accepts it now: drop it from EXTENSIONS"
    for name in ENTRIES[twin]["frames"]:
        assert _ours(text, name, zeek) == _ours(twin, name, zeek)
    assert not _differences(twin, zeek)


@pytest.mark.parametrize("text", FAILING)
def test_same_error_as_tshark(text: str) -> None:
    want = ENTRIES[text]["error"]
    with pytest.raises(FilterError) as exc:
        compile_filter(text)
    assert exc.value.exit_status == 2
    if text in MESSAGE_DIFFERENCES:
        assert exc.value.reason != want
        assert exc.value.reason.splitlines()[1:] == want.splitlines()[1:]
    else:
        assert exc.value.reason == want


def test_documented_differences_are_real() -> None:
    for (text, name), (n, reason) in DOCUMENTED.items():
        assert text in ENTRIES and name in ENTRIES[text]["frames"], (text, name)
        assert n > 0 and reason


def test_shipped_captures_are_referenced() -> None:
    assert "data/demo-stale-keepalive.pcap" in EXPECTED["tcp_frames"]
    assert sum(name.startswith("data/lab/") for name in EXPECTED["tcp_frames"]) >= 5


def test_counts_are_not_empty() -> None:
    """The reference must select something: a filter list that matches nothing proves little."""
    matched = sum(1 for e in EXPECTED["filters"] if "frames" in e and any(e["frames"].values()))
    assert matched >= 0.8 * len(SELECTING)
    assert any(np.asarray(v).size for v in EXPECTED["tcp_frames"].values())
