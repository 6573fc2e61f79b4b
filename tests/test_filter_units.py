"""Display filter internals: laziness, candidate rows, the analysis mapping, HTTP heads, the API."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable
from tcpwhy.filter import (
    FilterContext,
    FilterError,
    add_filter_argument,
    compile_filter,
    filter_from_args,
    select_packets,
    select_streams,
)
from tcpwhy.filter import compiler as compiler_mod
from tcpwhy.filter.compiler import ByteValues, _contains_backed, apply_slice
from tcpwhy.filter.fields import ANALYSIS_FLAGS
from tcpwhy.filter.http import parse_head

DATA = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data"
SRC = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "filter"


@pytest.fixture(scope="module")
def table() -> PacketTable:
    return read_table(str(DATA / "lab" / "zero-window.pcap"))


@pytest.fixture(scope="module")
def demo() -> PacketTable:
    return read_table(str(DATA / "demo-stale-keepalive.pcap"))


def frames(t: PacketTable, mask: npt.NDArray[np.bool_]) -> list[int]:
    return [int(x) for x in t["frame"][mask]]


def test_needs_name_only_the_state_a_filter_uses() -> None:
    assert compile_filter("tcp.port == 80 and tcp.payload contains 41").needs == frozenset()
    assert compile_filter("tcp.stream == 1 or tcp.seq > 5").needs == {"streams"}
    assert "analysis" in compile_filter("not tcp.analysis.retransmission").needs
    assert compile_filter('http.request.method == "GET"').needs == {"http"}


def test_state_is_computed_only_when_needed(table: PacketTable) -> None:
    ctx = FilterContext(table)
    compile_filter("tcp.len > 0 and ip.src == 10.77.0.1").mask(table, ctx)
    assert ctx._streams is None and ctx._analysis is None
    compile_filter("tcp.stream == 0").mask(table, ctx)
    assert ctx._streams is not None and ctx._analysis is None


def test_payload_search_sees_only_candidate_rows(
    table: PacketTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = compiler_mod._contains_backed

    def spy(v: ByteValues, needle: bytes) -> npt.NDArray[np.bool_]:
        seen.append(len(v))
        return real(v, needle)

    monkeypatch.setattr(compiler_mod, "_contains_backed", spy)
    # written expensive-first: the cheap port test still runs first and narrows the rows
    flt = compile_filter('tcp.payload contains "x" and tcp.dstport == 8080')
    flt.mask(table)
    with_payload = (table["dport"] == 8080) & (table["payload_cap"] > 0)
    assert seen == [int(with_payload.sum())]
    assert 0 < seen[0] < len(table)
    seen.clear()
    compile_filter('tcp.srcport == 1 and tcp.payload contains "x"').mask(table)
    assert seen == []  # no row left: the search never ran


def test_or_skips_rows_already_matched(table: PacketTable, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = compiler_mod._contains_backed
    monkeypatch.setattr(
        compiler_mod, "_contains_backed", lambda v, n: (seen.append(len(v)), real(v, n))[1]
    )
    compile_filter('tcp.payload contains "x" or tcp.len > 0').mask(table)
    assert seen == []  # every row with a payload already matched tcp.len > 0


def test_joined_search_matches_a_plain_search() -> None:
    rng = np.random.default_rng(7)
    caps = rng.integers(0, 12, 400)
    data = rng.integers(0, 3, int(caps.sum()) + 5).astype(np.uint8)  # small alphabet: many hits
    off = np.zeros(len(caps), np.int64)
    np.cumsum(caps[:-1], out=off[1:])
    v = ByteValues(data=data, off=off, cap=caps.astype(np.int64))
    for needle in (b"\x00", b"\x01\x02", b"\x00\x00\x00", b"\x02\x01\x00\x01", b""):
        want = [needle in b for b in v.objs()]
        assert _contains_backed(v, needle).tolist() == want


def test_window_slices_match_generic_slices() -> None:
    rng = np.random.default_rng(3)
    caps = rng.integers(0, 8, 200).astype(np.int64)
    data = rng.integers(0, 256, int(caps.sum())).astype(np.uint8)
    off = np.zeros(len(caps), np.int64)
    np.cumsum(caps[:-1], out=off[1:])
    backed = ByteValues(data=data, off=off, cap=caps)
    plain = ByteValues(backed.objs())
    for ranges in ([(0, 2)], [(3, 3)], [(1, None)], [(-2, None)], [(0, 1), (4, 1)]):
        a = apply_slice(ByteValues(data=data, off=off, cap=caps), "bytes", ranges).objs()
        b = apply_slice(plain, "bytes", ranges).objs()
        assert a == b, ranges


@dataclass
class FakeAnalysis:
    n: int
    flags: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    dup_ack_num: npt.NDArray[np.int64] = field(init=False)
    ack_rtt: npt.NDArray[np.float64] = field(init=False)
    initial_rtt: npt.NDArray[np.float64] = field(init=False)
    time_delta: npt.NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        self.flags = {name: np.zeros(self.n, bool) for name in ANALYSIS_FLAGS}
        self.dup_ack_num = np.zeros(self.n, np.int64)
        self.ack_rtt = np.full(self.n, np.nan)
        self.initial_rtt = np.full(self.n, np.nan)
        self.time_delta = np.zeros(self.n)


def test_analysis_fields_map_to_the_analysis_arrays(table: PacketTable) -> None:
    n = len(table)
    fake = FakeAnalysis(n)
    fake.flags["retransmission"][[1, 4]] = True
    fake.flags["window_update"][[4, 6]] = True
    fake.dup_ack_num[[2, 3]] = [1, 2]
    fake.flags["duplicate_ack"][[2, 3]] = True
    fake.ack_rtt[[0, 5]] = [0.25, 0.1]
    fake.initial_rtt[:] = 0.003
    fake.time_delta[7] = 2.5
    ctx = FilterContext(table, analysis=fake)
    fr = table["frame"]

    def sel(text: str) -> list[int]:
        return frames(table, compile_filter(text).mask(table, ctx))

    assert sel("tcp.analysis.retransmission") == [int(fr[1]), int(fr[4])]
    assert sel("tcp.analysis.flags") == [int(fr[i]) for i in (1, 2, 3, 4, 6)]
    assert sel("tcp.analysis.flags && !tcp.analysis.window_update") == [
        int(fr[i]) for i in (1, 2, 3)
    ]
    assert sel("tcp.analysis.duplicate_ack_num == 2") == [int(fr[3])]
    assert sel("tcp.analysis.ack_rtt > 0.2") == [int(fr[0])]
    assert sel("tcp.analysis.ack_rtt") == [int(fr[0]), int(fr[5])]  # NaN means absent
    assert sel("tcp.analysis.initial_rtt == 0.003") == [int(x) for x in fr]
    assert sel("tcp.time_delta >= 2.5") == [int(fr[7])]
    for name in ANALYSIS_FLAGS:
        assert len(sel(f"tcp.analysis.{name}")) == int(fake.flags[name].sum())


def test_select_streams_lists_streams_with_a_match(demo: PacketTable) -> None:
    ctx = FilterContext(demo)
    flt = compile_filter("tcp.flags.syn == 1 and tcp.flags.ack == 0")
    streams = select_streams(demo, flt, ctx)
    stream = ctx.streams["stream"]
    assert streams.tolist() == sorted({int(s) for s in stream[select_packets(demo, flt, ctx)]})
    assert streams.tolist() == [0, 1]  # tshark: one SYN in each of the demo's two streams
    assert select_streams(demo, compile_filter("tcp.port == 1"), ctx).tolist() == []


def test_argument_helper_and_error_text() -> None:
    parser = argparse.ArgumentParser()
    add_filter_argument(parser)
    assert filter_from_args(parser.parse_args([])) is None
    flt = filter_from_args(parser.parse_args(["-Y", "tcp.port == 80"]))
    assert flt is not None and flt.text == "tcp.port == 80"
    with pytest.raises(FilterError) as exc:
        filter_from_args(parser.parse_args(["-Y", "tcp.prot"]))
    assert exc.value.exit_status == 2
    assert f"tcpwhy: {exc.value}" == (
        "tcpwhy: -Y: tcp.prot is neither a field nor a protocol name.\n    tcp.prot\n    ^~~~~~~~"
    )


def test_filter_text_is_never_executed() -> None:
    for path in SRC.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(eval|exec)\(", text), path
        assert "__import__" not in text


def test_hostile_filters_only_raise_filter_errors() -> None:
    for text in (
        '__import__("os")',
        "tcp.port == 1; rm",
        "tcp.payload[" + "9" * 40 + "]",
        "{",
        '"\\',
    ):
        with pytest.raises(FilterError):
            compile_filter(text)


def test_http_heads() -> None:
    h = parse_head(b"GET /a?b HTTP/1.1\r\nhOsT:  example.org \r\nConnection: close\r\n\r\nbody")
    assert h is not None and h.request
    assert (h.method, h.uri, h.host, h.connection) == (b"GET", b"/a?b", b"example.org", b"close")
    r = parse_head(b"HTTP/1.0 404 Not Found\r\nHost: x\r\n")
    assert r is not None and not r.request and r.code == 404 and r.host == b"x"
    for junk in (
        b"",
        b"GETX / HTTP/1.1\r\n",
        b"HTTP/1.1 20 OK\r\n",
        b"HTTP/x.y 200 OK",
        b"\xff" * 100,
    ):
        assert parse_head(junk) is None
    # headers after the first blank line are body, not headers
    b = parse_head(b"POST / HTTP/1.1\r\n\r\nHost: evil\r\n")
    assert b is not None and b.host is None


def test_whitespace_sets_and_not_in(table: PacketTable) -> None:
    a = compile_filter("tcp.srcport in {8080 1}").mask(table)
    b = compile_filter("tcp.srcport in {8080, 1}").mask(table)
    c = compile_filter("tcp.srcport not in {8080, 1}").mask(table)
    # the server's packets, as tshark lists them for tcp.srcport == 8080
    assert frames(table, a) == [2, 5, 9, 11, 14, 15, 18, 20, 23, 26, 29, 31]
    assert (a == b).all() and (c == ~a).all()
