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
from tcpwhy.decode.http1 import parse_head
from tcpwhy.decode.table import PacketTable, empty_columns
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
from tcpwhy.filter import syntax as S
from tcpwhy.filter.compiler import ByteValues, _contains_backed, apply_slice, slice_bytes
from tcpwhy.filter.fields import ANALYSIS_FLAGS
from tcpwhy.filter.syntax import RANGE, Token, parse_range
from tests.gates import need

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
    for spec in ("0:2", "3:3", "1:", "-2:", "0:1,4:1", "2-4", "-3--1"):
        ranges = [parse_range(spec, Token(RANGE, r, 0, r)) for r in spec.split(",")]
        a = apply_slice(ByteValues(data=data, off=off, cap=caps), "bytes", ranges).objs()
        b = apply_slice(plain, "bytes", ranges).objs()
        assert a == b, spec
        # tshark 4.0: a range past the end stops the slice (nothing is clamped)
        assert b == [slice_bytes(x, ranges) for x in plain.objs()]


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
        "(" * 5000 + "tcp" + ")" * 5000,
        "!" * 5000 + "tcp",
        "tcp.len" + " + 1" * 5000,
        "max(" * 3000 + "tcp.len" + ")" * 3000,
        "tcp.payload" + "[0:1]" * 3000,
        "-" * 3000 + "tcp.len",
    ):
        with pytest.raises(FilterError):
            compile_filter(text)


def test_large_filters_compile(table: PacketTable) -> None:
    big = compile_filter("tcp.port in {" + "1," * 20000 + "8080}")
    assert big.mask(table).any()
    deep = compile_filter("(" * 150 + "tcp.port == 8080" + ")" * 150)
    assert (deep.mask(table) == big.mask(table)).all()


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


# ---------------------------------------------------------------- tshark 4.0 grammar


def tree(text: str) -> S.Node:
    from tcpwhy.filter.compiler import FUNCTIONS
    from tcpwhy.filter.fields import FIELDS

    return S.parse(text, lambda n: n in FIELDS, lambda n: n in FUNCTIONS)


def shape(node: S.Node | None) -> object:
    """A compact picture of a syntax tree: operators and the text of the leaves."""
    if node is None:
        return None
    if isinstance(node, S.Logic):
        return (node.op, *[shape(i) for i in node.items])
    if isinstance(node, S.Not):
        return ("not", shape(node.item))
    if isinstance(node, S.Bare):
        return shape(node.value)
    if isinstance(node, S.Relation):
        rel = (node.op, shape(node.lhs), shape(node.rhs))
        return (node.how, *rel) if node.how else rel
    if isinstance(node, S.InSet):
        return ("in", shape(node.lhs), [(shape(a), shape(b)) for a, b in node.items])
    if isinstance(node, S.Arith):
        return (
            (node.op, shape(node.a)) if node.b is None else (node.op, shape(node.a), shape(node.b))
        )
    if isinstance(node, S.Call):
        return (node.name, *[shape(a) for a in node.args])
    if isinstance(node, S.Slice):
        return ("slice", shape(node.entity), [r.text for r in node.ranges])
    if isinstance(node, S.FieldRef):
        return (
            ("$" if node.reference else "")
            + node.name
            + ("#" + ",".join(r.text for r in node.layers) if node.layers else "")
        )
    assert isinstance(node, S.Literal)
    return node.text


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # & binds tighter than comparisons, looser than + - * / %
        ("tcp.flags & 0x12 == 0x12", ("any_eq", ("&", "tcp.flags", "0x12"), "0x12")),
        (
            "tcp.flags & 0x10 + 0x02 == 0x12",
            ("any_eq", ("&", "tcp.flags", ("+", "0x10", "0x02")), "0x12"),
        ),
        ("tcp.len + 1 & 3", ("&", ("+", "tcp.len", "1"), "3")),
        ("tcp.len & 2 & 3", ("&", ("&", "tcp.len", "2"), "3")),
        ("tcp.len * 2 + 1 > 3", ("gt", ("+", ("*", "tcp.len", "2"), "1"), "3")),
        ("tcp.len - 1 - 2", ("-", ("-", "tcp.len", "1"), "2")),
        ("tcp.len % 2 / 3", ("/", ("%", "tcp.len", "2"), "3")),
        ("-tcp.len * 2 < 0", ("lt", ("*", ("neg", "tcp.len"), "2"), "0")),
        ("4 * {tcp.len + 3} > 1", ("gt", ("*", "4", ("+", "tcp.len", "3")), "1")),
        # a bitwise test alone, negated, and combined
        ("tcp.flags & 0x02", ("&", "tcp.flags", "0x02")),
        ("!(tcp.flags & 0x04)", ("not", ("&", "tcp.flags", "0x04"))),
        ("not tcp.flags & 0x10", ("not", ("&", "tcp.flags", "0x10"))),
        (
            "tcp.flags & 0x02 && tcp.flags & 0x10",
            ("and", ("&", "tcp.flags", "0x02"), ("&", "tcp.flags", "0x10")),
        ),
        ("tcp.flags bitwise_and 2", ("&", "tcp.flags", "2")),
        # not > and > or, left to right: (A and B) or (not C) or (D and (not E)) or F
        (
            "tcp.syn and tcp.ack or not tcp.fin or tcp.urg and not tcp.psh or tcp.rst",
            None,  # names that are not fields: checked below with real fields
        ),
        (
            "ip and tcp or not http or eth and not vlan or frame",
            ("or", ("and", "ip", "tcp"), ("not", "http"), ("and", "eth", ("not", "vlan")), "frame"),
        ),
        ("not ip.dst eq 1.2.3.4", ("not", ("any_eq", "ip.dst", "1.2.3.4"))),
        # chains: a < b < c is a < b and b < c
        (
            "tcp.srcport < tcp.dstport < 60000",
            ("and", ("lt", "tcp.srcport", "tcp.dstport"), ("lt", "tcp.dstport", "60000")),
        ),
        # quantifiers, sets, layers, references, slices, functions
        ("all tcp.port > 1024", ("all", "gt", "tcp.port", "1024")),
        ("any ip.addr != 1.1.1.1", ("any", "all_ne", "ip.addr", "1.1.1.1")),
        ("tcp.port not in {80, 1..3}", ("not", ("in", "tcp.port", [("80", None), ("1", "3")]))),
        ("tcp.port in {-1}", ("in", "tcp.port", [(("neg", "1"), None)])),
        ("ip.addr#2 == 1.2.3.4", ("any_eq", "ip.addr#2", "1.2.3.4")),
        ("tcp.port#[2-4]", "tcp.port#2-4"),
        ("${frame.time_relative} < 1", ("lt", "$frame.time_relative", "1")),
        (
            "tcp.payload[1,3-5,9:][0] == 00",
            ("any_eq", ("slice", ("slice", "tcp.payload", ["1", "3-5", "9:"]), ["0"]), "00"),
        ),
        (
            "max(tcp.srcport, tcp.dstport + 1) == 80",
            ("any_eq", ("max", "tcp.srcport", ("+", "tcp.dstport", "1")), "80"),
        ),
        # a minus inside a word belongs to the word
        ("tcp.dstport-1", "tcp.dstport-1"),
        ("tcp.dstport -1", ("-", "tcp.dstport", "1")),
        (".tcp.port == 80", ("any_eq", "tcp.port", "80")),
    ],
)
def test_precedence_as_tshark_4_0(text: str, want: object) -> None:
    if want is None:
        with pytest.raises(FilterError):
            compile_filter(text)
        return
    assert shape(tree(text)) == want


def test_empty_filter_selects_everything(table: PacketTable) -> None:
    for text in ("", "   "):
        assert compile_filter(text).mask(table).all()


def _synthetic(
    ports: list[tuple[int, int]], flags: list[int], payloads: list[bytes]
) -> PacketTable:
    n = len(ports)
    cols = empty_columns(n)
    cols["frame"][:] = np.arange(1, n + 1)
    cols["ip_version"][:] = 4
    cols["src_lo"][:] = 0xFFFF_0A00_0001
    cols["dst_lo"][:] = 0xFFFF_0A00_0002
    cols["sport"][:] = [p[0] for p in ports]
    cols["dport"][:] = [p[1] for p in ports]
    cols["flags"][:] = flags
    caps = np.array([len(p) for p in payloads], np.int64)
    off = np.zeros(n, np.int64)
    np.cumsum(caps[:-1], out=off[1:])
    cols["payload_cap"][:] = caps
    cols["payload_len"][:] = caps
    cols["payload_off"][:] = off
    data = np.frombuffer(b"".join(payloads), np.uint8).copy()
    return PacketTable(cols, data)


@pytest.fixture(scope="module")
def synth() -> PacketTable:
    return _synthetic(
        [(80, 1000), (1000, 80), (5, 10), (10, 5), (65535, 1)],
        [0x002, 0x012, 0x010, 0x018, 0x004],
        [b"", b"", b"GET / HTTP/1.1\r\n", b"\x00\x00", b"z"],
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # bitwise and: alone it is "some bit set"; compared, the masked value
        ("tcp.flags & 0x02", [1, 2]),
        ("tcp.flags & 0x12 == 0x12", [2]),
        ("tcp.flags & 0x12 != 0x12", [1, 3, 4, 5]),
        ("!(tcp.flags & 0x04)", [1, 2, 3, 4]),
        ("tcp.flags & 0x02 && tcp.flags & 0x10", [2]),
        ("tcp.flags & 0x10 + 0x08 == 0x18", [4]),
        ("tcp.flags & tcp.srcport", [4, 5]),  # 0x18 & 10, 0x004 & 65535
        # byte strings: the shorter length; alone, some byte not zero
        ("tcp.payload[0:2] & 40 == 40", [3]),
        ("tcp.payload[0:2] & 00:ff", [3]),
        ("tcp.payload & ff:ff", [3, 5]),
        # a slice past the end of the payload is empty, not cut short
        ("tcp.payload[0:2]", [3, 4]),
        ("tcp.payload[-2:]", [3, 4]),
        ("len(tcp.payload) == 1", [5]),
        # 32-bit arithmetic; below zero is signed; an overflow or a division by zero drops
        # the value (so "all" of nothing holds, "any" of nothing does not)
        ("tcp.srcport - tcp.dstport < 0", [1, 3]),
        ("tcp.srcport - tcp.dstport > 0", [2, 4, 5]),
        ("-tcp.srcport < 0", [1, 2, 3, 4, 5]),
        ("tcp.srcport + -1 == 79", []),
        ("tcp.srcport / 0 == 1", []),
        ("tcp.srcport / 0 === 1", [1, 2, 3, 4, 5]),
        ("tcp.srcport % 3 == 2", [1, 3]),
        ("tcp.dstport >= 4 * {tcp.srcport + 3}", [1]),
        # any / all and the 4.0 equality operators
        ("tcp.port == 80", [1, 2]),
        ("tcp.port != 80", [3, 4, 5]),
        ("tcp.port !== 80", [1, 2, 3, 4, 5]),
        ("tcp.port === 80", []),
        ("all tcp.port > 4", [1, 2, 3, 4]),
        ("any tcp.port === 1", [5]),
        # tshark 4.0 quantifies each element: all values == 5, or all values == 10
        ("all tcp.port in {5, 10}", []),
        ("all tcp.port in {5..10}", [3, 4]),
        ("tcp.srcport in {tcp.dstport, 65535}", [5]),
        # functions
        ("max(tcp.srcport, tcp.dstport) == 1000", [1, 2]),
        ("min(tcp.srcport, tcp.dstport, 3) == 1", [5]),
        ('string(tcp.srcport) matches "^[0-9]0+$"', [1, 2, 4]),
        ("count(tcp.port) == 2", [1, 2, 3, 4, 5]),
        # a field reference: no packet is selected on a command line, so never true
        ("tcp.port == ${tcp.port}", []),
        ("not tcp.port == ${tcp.port}", [1, 2, 3, 4, 5]),
        ("tcp.srcport < tcp.dstport < 100", [3]),
        ("tcp.payload[0] == 'G'", [3]),
        ("tcp.srcport == 'P'", [1]),
    ],
)
def test_tshark_4_0_semantics(synth: PacketTable, text: str, want: list[int]) -> None:
    assert frames(synth, compile_filter(text).mask(synth)) == want


@pytest.mark.parametrize(
    ("text", "message", "caret"),
    [
        (
            "tcp.flags & 0x12 == 0x12 == 0x12",
            'Left side of "==" expression must be a field or function, not 0x12.',
            "                    ^~~~",
        ),
        ("2 & tcp.flags", "Constant arithmetic expression on the LHS is invalid.", "^"),
        ("tcp.flags.syn & 1", "FT_BOOLEAN cannot &.", "^~~~~~~~~~~~~"),
        ("ip.src/24 == ip.dst/24", "FT_IPv4 cannot /.", "^~~~~~"),
        ('tcp.flags & "a"', '"a" is not a valid arithmetic operand.', "            ^~~"),
        (
            "tcp.len + 1 contains 3",
            '"contains" was unexpected in this context.',
            "            ^~~~~~~~",
        ),
        ("tcp.len + 1 in {3}", '"in" was unexpected in this context.', "            ^~"),
        ("(tcp.port) == 80", '"==" was unexpected in this context.', "           ^~"),
        (
            "tcp.dstport-1 == 79",
            'Left side of "==" expression must be a field or function, not tcp.dstport-1.',
            "^~~~~~~~~~~~~",
        ),
        ("len(tcp.payload)", "You cannot test whether a function is present.", "^~~"),
        ("tcp.port#x", 'Expected digit or "[", not "x"', "         ^"),
        (
            "tcp.payload[1-1] == 00",
            "Range 1-1 isn't valid because 1 is greater or equal than 1",
            "            ^~~",
        ),
        (
            "tcp.payload[0:0] == 00",
            "Range 0:0 isn't valid because length 0 isn't positive",
            "            ^~~",
        ),
        (
            "frame.len > '\\n'",
            "'\\n' is too long to be a valid character constant.",
            "            ^~~~",
        ),
        (
            "tcp.flags.syn == true",
            '"true" cannot be found among the possible values for tcp.flags.syn.',
            "                 ^~~~",
        ),
        (
            'tcp.payload contains "abc',
            "The final quote was missing from a quoted string.",
            "                         ^",
        ),
        ("frame.time_relative > 1e1", '"1e1" is not a valid time.', "                      ^~~"),
    ],
)
def test_errors_point_at_the_failure(text: str, message: str, caret: str) -> None:
    with pytest.raises(FilterError) as exc:
        compile_filter(text)
    lines = exc.value.reason.splitlines()
    assert lines[0] == message
    assert lines[1:] == [f"    {text}", f"    {caret}"]


def test_errors_without_a_place() -> None:
    for text, message in (
        ("tcp.port ==", "Unexpected end of filter expression."),
        ("any tcp.port", "Unexpected end of filter expression."),
        ("${foo}", "macro 'foo' does not exist"),
        # tshark gives a slice no place in the text
        ("len(tcp.payload[0:2]) == 2", "Only fields can be used as parameter for len()"),
        ("tcp.payload[0] in {47}", "Only a field may be tested for membership in a set."),
        ('tcp.payload matches "("', None),
    ):
        with pytest.raises(FilterError) as exc:
            compile_filter(text)
        if message is not None:
            assert exc.value.reason == message
        assert len(exc.value.reason.splitlines()) == 1


def test_matches_runs_pcre2_with_tsharks_options() -> None:
    """`matches` is PCRE2 (tshark's engine and dialect) wherever libpcre2-8 is installed (CI
    installs tshark, which links it): case-insensitive unless (?-i), never UTF."""
    from tcpwhy.filter.pcre import ENGINE, FilterRegexError, compile_pattern

    need(ENGINE.startswith("PCRE2"), ENGINE)
    assert compile_pattern(rb"cldc").search(b"CLDC")
    assert not compile_pattern(rb"(?-i)cldc").search(b"CLDC")
    assert compile_pattern(rb"x(?-i)c").search(b"Xc")
    assert not compile_pattern(rb"x(?-i)c").search(b"XC")
    # PCRE2's own syntax, which Python's re refuses or reads otherwise
    assert compile_pattern(rb"\Qa.b\E").search(b"xA.B") and not compile_pattern(rb"\Qa.b\E").search(
        b"axb"
    )
    assert compile_pattern(rb"^[[:digit:]]+$").search(b"123")
    assert compile_pattern(rb"\x{47}").search(b"g")
    assert compile_pattern(b"\xff").search(b"a\xffb")  # bytes, not UTF-8 characters
    with pytest.raises(FilterRegexError, match="using UTF is disabled by the application"):
        compile_pattern(b"(*UTF)a")
    with pytest.raises(FilterRegexError, match="missing closing parenthesis"):
        compile_pattern(b"(a")


def test_python_fallback_scopes_pcre_option_settings() -> None:
    """Where libpcre2-8 is missing, Python's re runs `matches`: PCRE's option settings become
    scoped groups, so (?-i) still turns case off to the end of its group."""
    from tcpwhy.filter.pcre import FilterRegexError, _PythonPattern, pcre_options

    assert pcre_options(rb"(?-i)cldc") == rb"(?-i:cldc)"
    assert pcre_options(rb"a(b(?-i)c)d") == rb"a(b(?-i:c))d"
    assert pcre_options(rb"[(?-i)]") == rb"[(?-i)]"
    assert _PythonPattern(rb"cldc").search(b"CLDC")
    assert not _PythonPattern(rb"(?-i)cldc").search(b"CLDC")
    assert _PythonPattern(rb"x(?-i)c").search(b"Xc") and not _PythonPattern(rb"x(?-i)c").search(
        b"XC"
    )
    for bad in (b"(a", b"a{4294967296}", b"(" * 1000 + b")" * 1000):
        with pytest.raises(FilterRegexError):
            _PythonPattern(bad)


def test_local_dates_use_the_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from tcpwhy.filter.compiler import parse_abs_time

    utc = parse_abs_time("2020-07-04T12:34:56Z")
    assert utc == 1593866096 * 10**9
    assert parse_abs_time("Jul  4, 2020 12:34:56.5 UTC") == utc + 5 * 10**8
    assert parse_abs_time("2020-07-04 14:34:56+02:00") == utc
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert parse_abs_time("2020-07-04T14:34:56") == utc  # CEST, UTC+2
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_compiled_matches_filter_copies_and_pickles() -> None:
    """A compiled filter holds the engine's code (library memory): copied or pickled, it is
    compiled again and still matches."""
    import copy
    import pickle

    from tcpwhy.filter.pcre import compile_pattern

    rx = compile_pattern(rb"(?-i)^GET /")
    for again in (copy.deepcopy(rx), pickle.loads(pickle.dumps(rx))):
        assert again.search(b"GET /x") and not again.search(b"get /x")
    flt = compile_filter('tcp.payload matches "^get "')
    assert copy.deepcopy(flt).text == flt.text


@pytest.mark.parametrize(
    "name", ["http-no-crlf.pcap", "http-concurrent-range-requests.pcap", "tunnels-teredo.pcap"]
)
def test_matches_over_a_tables_payloads_is_each_payloads_search(
    zeek_corpus: Path, name: str
) -> None:
    """`matches` on `tcp.payload` runs a compiled loop over the table's bytes; each row's
    answer is the engine's answer for that row's payload, asked one at a time, also where
    the bytes are left in the capture file (the diagnosis's tables)."""
    from tcpwhy.capture import iter_tables
    from tcpwhy.decode.table import CaptureStats
    from tcpwhy.diagnose.engine import _join, _slim
    from tcpwhy.filter.pcre import compile_pattern

    path = str(zeek_corpus / name)
    t = read_table(path)
    in_file = _join([_slim(c) for c in iter_tables(path, CaptureStats())])
    payloads = [t.payload(i) for i in range(len(t))]
    selected = 0
    for pat in (rb"^(GET|POST) ", rb"http/1\.[01]\r\n", rb"(?-i)Host: ", rb"(a|b)+c", rb"\x00"):
        rx = compile_pattern(pat)
        want = np.array([len(p) > 0 and rx.search(p) for p in payloads], bool)
        flt = compile_filter('tcp.payload matches r"' + pat.decode() + '"')
        assert flt.mask(t, FilterContext(t)).tolist() == want.tolist(), pat
        assert flt.mask(in_file, FilterContext(in_file)).tolist() == want.tolist(), pat
        selected += int(want.sum())
    assert selected  # the patterns select some rows: the comparison proves something
