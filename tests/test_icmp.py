"""ICMP and ICMPv6 errors about TCP against tshark 4.0: decoding, the join to tcp.stream,
the Info column, display filters; and what the diagnosis makes of them.

tests/data/icmp/codes.pcap holds every error type and code tcpwhy decodes (each after
the segment it quotes, a few quoting only 8 bytes of TCP header, one about a
conversation not seen before), codes.pcap.tsv tshark's fields for it, filters.json
the frames tshark selects per filter on it and on the lab's ICMP recordings
(all made by tests/data/icmp/generate.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import iter_tables, read_table
from tcpwhy.decode.table import CaptureStats, PacketTable, format_addr
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.explain import explain
from tcpwhy.filter import FilterContext, compile_filter
from tcpwhy.filter.icmp_fields import icmp_streams
from tcpwhy.report.packets import iter_rows
from tcpwhy.tcp.streams import StreamTracker

HERE = Path(__file__).resolve().parent / "data" / "icmp"
CODES = HERE / "codes.pcap"
LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"
RECORDINGS = ["icmp-reject", "icmp-no-route", "pmtu-black-hole", "pmtu-discovery"]


def _tsv() -> list[dict[str, str]]:
    with (HERE / "codes.pcap.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _ours(path: Path) -> tuple[PacketTable, StreamTracker, dict[str, np.ndarray]]:
    t = read_table(str(path))
    tracker = StreamTracker()
    s = tracker.feed(t)
    return t, tracker, s


def test_every_error_decoded_as_tshark_decodes_it() -> None:
    stats = CaptureStats()
    t = read_table(str(CODES), stats)
    ic = t.icmp
    assert ic is not None
    tracker = StreamTracker()
    tracker.feed(t)
    assert tracker.icmp_out is not None
    stream = tracker.icmp_out["stream"]
    by_frame = {int(f): i for i, f in enumerate(ic["frame"])}
    rows = [r for r in _tsv() if r["icmp.type"] or r["icmpv6.type"]]
    compared = 0
    for r in rows:
        fno = int(r["frame.number"])
        if not r["tcp.srcport"]:
            assert fno not in by_frame, "an error about UDP, or an echo: not about TCP"
            continue
        i = by_frame[fno]
        v6 = bool(r["icmpv6.type"])
        p = "icmpv6" if v6 else "icmp"
        assert int(ic["ip_version"][i]) == (6 if v6 else 4)
        assert int(ic["icmp_type"][i]) == int(r[f"{p}.type"])
        assert int(ic["icmp_code"][i]) == int(r[f"{p}.code"])
        assert int(ic["icmp_mtu"][i]) == int(r[f"{p}.mtu"] or 0)
        assert int(ic["sport"][i]) == int(r["tcp.srcport"])
        assert int(ic["dport"][i]) == int(r["tcp.dstport"])
        assert int(ic["seq"][i]) == int(r["tcp.seq"]), "the quoted header's raw number"
        if r["tcp.flags"]:
            assert int(ic["flags"][i]) == int(r["tcp.flags"], 16)
            assert int(ic["doff"][i]) == int(r["tcp.hdr_len"])
        else:
            assert int(ic["doff"][i]) == 0, "the quote stops after the sequence number"
        # tshark's first address is the error's own, the second the quoted one
        src = r["ipv6.src" if v6 else "ip.src"].split(",")
        dst = r["ipv6.dst" if v6 else "ip.dst"].split(",")
        assert format_addr(ic["icmp_src_hi"][i], ic["icmp_src_lo"][i]) == src[0]
        assert format_addr(ic["icmp_dst_hi"][i], ic["icmp_dst_lo"][i]) == dst[0]
        assert format_addr(ic["src_hi"][i], ic["src_lo"][i]) == src[1]
        assert format_addr(ic["dst_hi"][i], ic["dst_lo"][i]) == dst[1]
        ttl = r["ipv6.hlim" if v6 else "ip.ttl"].split(",")
        assert [int(ic["icmp_ttl"][i]), int(ic["ip_ttl"][i])] == [int(x) for x in ttl]
        if r["tcp.stream"]:
            assert int(stream[i]) == int(r["tcp.stream"])
        else:
            # tshark joins no stream to a quote cut after the sequence number (the filter's
            # tcp.stream is absent there too); the diagnosis joins its conversation's stream
            assert int(stream[i]) == int(stream[i - 1]) + 1 == int(r["frame.number"]) // 2 - 1
        compared += 1
    assert compared == 40 and len(ic) == 40
    assert stats.icmp == 40 and stats.skipped == {"ICMP": 2}


def test_tcp_rows_keep_their_streams() -> None:
    """An error about a conversation not seen yet opens its stream, as in Wireshark: the
    SYN after it takes that stream, with relative numbers from its own base."""
    t, _, s = _ours(CODES)
    want = {int(r["frame.number"]): r for r in _tsv() if r["tcp.stream"] and not r["icmp.type"]}
    want = {k: v for k, v in want.items() if not v["icmpv6.type"]}
    got = dict(zip(t["frame"].tolist(), s["stream"].tolist(), strict=True))
    assert {k: int(v["tcp.stream"]) for k, v in want.items()} == got
    i = t["frame"].tolist().index(80)
    assert int(s["stream"][i]) == 39 and int(s["rel_seq"][i]) == 0 and bool(s["new"][i])


@pytest.mark.parametrize("path", [CODES] + [LAB / f"{n}.pcap" for n in RECORDINGS])
def test_info_column_and_order(path: Path) -> None:
    if path == CODES:
        want = {int(r["frame.number"]): r["_ws.col.Info"] for r in _tsv()}
    else:
        tsv = Path(__file__).parent / "data" / "tshark" / f"{path.name}.info.tsv"
        want = {int(a): b for a, b in (line.rstrip("\n").split("\t", 1) for line in tsv.open())}
    got = list(iter_rows(str(path), CaptureStats()))
    frames = [r.frame for r in got]
    assert frames == sorted(frames), "ICMP rows in capture order among the TCP rows"
    skipped = {81, 82} if path == CODES else set()
    assert set(frames) == set(want) - skipped
    for r in got:
        if r.icmp is not None:
            assert r.info == want[r.frame], r.frame


def test_chunks_join_the_same_as_whole() -> None:
    t, tracker, s = _ours(CODES)
    assert tracker.icmp_out is not None
    whole = tracker.icmp_out["stream"]
    tr = StreamTracker()
    parts, icmp_parts = [], []
    for c in iter_tables(str(CODES), chunk_bytes=300):
        parts.append(tr.feed(c)["stream"])
        if tr.icmp_out is not None:
            icmp_parts.append(tr.icmp_out["stream"])
    assert len(parts) > 10
    assert np.array_equal(np.concatenate(parts), s["stream"])
    assert np.array_equal(np.concatenate(icmp_parts), whole)
    joined = PacketTable.concat(list(iter_tables(str(CODES), chunk_bytes=300)))
    assert joined.icmp is not None and t.icmp is not None
    for k in ("frame", "icmp_at", "seq", "icmp_type"):
        assert np.array_equal(joined.icmp[k], t.icmp[k]), k


FILTERS = json.loads((HERE / "filters.json").read_text())


@pytest.mark.parametrize("flt", sorted(FILTERS))
def test_filters_match_tshark(flt: str) -> None:
    f = compile_filter(flt)
    for name, want in FILTERS[flt].items():
        path = CODES if name == CODES.name else LAB / name
        t, tracker, s = _ours(path)
        ctx = FilterContext(t, streams=s)
        frames = set(t["frame"][f.mask(t, ctx)].tolist())
        ours = set(t["frame"].tolist())
        if t.icmp is not None and tracker.icmp_out is not None:
            ic = t.icmp
            ictx = FilterContext(ic, streams=icmp_streams(ic, tracker.icmp_out["stream"]))
            frames |= set(ic["frame"][f.mask(ic, ictx)].tolist())
            ours |= set(ic["frame"].tolist())
        assert frames == set(want) & ours, (flt, name)


def test_diagnosis_of_every_code() -> None:
    """Each connect() that an error ended is one icmp-unreachable connection (too-big ones
    are not: path MTU); none is an unanswered SYN."""
    report = diagnose_files([str(CODES)])
    kinds = {f.kind for f in report.findings}
    assert kinds == {"icmp-unreachable"}, kinds
    n = sum(f.count for f in report.findings)
    # 40 errors, each on a connection of its own; 3 say packet too big (path MTU, not this)
    assert n == 37
    assert report.endings["rejected by ICMP"] == 37
    assert "no answer to SYN" not in report.endings
    errnos = {f.facts["errno"] for f in report.findings}
    assert errnos == {
        "ENETUNREACH",
        "EHOSTUNREACH",
        "ENOPROTOOPT",
        "ECONNREFUSED",
        "EOPNOTSUPP",
        "EHOSTDOWN",
        "ENONET",
        "EACCES",
        "EPROTO",
    }


def test_explain_no_route_and_network_unreachable() -> None:
    for msg, errno_name in (
        ("OSError: [Errno 113] No route to host", "EHOSTUNREACH"),
        ("dial tcp 10.0.0.5:443: connect: network is unreachable", "ENETUNREACH"),
        ("java.net.NoRouteToHostException: No route to host", "EHOSTUNREACH"),
        ("connect EHOSTUNREACH 10.1.2.3:80", "EHOSTUNREACH"),
        ("Error: connect ENETUNREACH", "ENETUNREACH"),
    ):
        hits = explain(msg)
        assert any(errno_name in h.name for h in hits), (msg, [h.name for h in hits])
        kinds = {k for h in hits for k, _ in h.kinds}
        assert "icmp-unreachable" in kinds
    assert "pmtu-black-hole" in {k for h in explain("Read timed out") for k, _ in h.kinds}


def test_conns_jsonl_names_the_errors() -> None:
    """`conns --format jsonl` adds `icmp` to the connections that got errors, nothing to the
    others; `conns -Y` with an ICMP field selects the connections its errors are about."""
    import io

    from tcpwhy.report.conns import write_conns

    out = io.StringIO()
    write_conns(str(LAB / "icmp-reject.pcap"), "jsonl", out=out)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g.get("icmp") for g in got] == [
        {"3/1": 1},
        {"1/3": 1},
        {"3/13": 1},
        {"1/1": 1},
        {"3/3": 1},
        {"1/4": 1},
    ]
    out = io.StringIO()
    write_conns(str(LAB / "pmtu-discovery.pcap"), "jsonl", out=out)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g.get("icmp") for g in got] == [{"3/4": 5}, None]
    out = io.StringIO()
    write_conns(
        str(LAB / "icmp-reject.pcap"), "csv", out=out, flt=compile_filter("icmpv6.code == 1")
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[0] == "3", "stream 3 only, no icmp column"


def test_analyze_limited_to_a_filter_keeps_the_errors() -> None:
    """`analyze -Y`: an ICMP field selects the connections its errors are about, and the
    kept connections keep their errors (never an unanswered SYN under a filter)."""
    path = str(LAB / "icmp-reject.pcap")
    for flt, streams in (
        ("tcp.port == 8081", [2, 3]),
        ("icmpv6.code == 1", [3]),
        ("icmp", [0, 2, 4]),
        ("ip.src == 10.77.1.1", [2]),
    ):
        report = diagnose_files([path], flt=compile_filter(flt))
        assert [(f.kind, f.streams) for f in report.findings] == [
            ("icmp-unreachable", [s]) for s in streams
        ], flt


def test_flow_ladder_shows_the_errors() -> None:
    import io

    from tcpwhy.report.flow import build_ladder, render

    def ladder(name: str, stream: int) -> list[str]:
        out = io.StringIO()
        render(build_ladder(str(LAB / name), stream), out)
        return out.getvalue().splitlines()

    lines = ladder("icmp-reject.pcap", 2)
    assert "── SYN  Seq=0 Len=0 ──" in lines[2]
    assert "|◀─ ICMP 3/13 from 10.77.1.1: Communication administra… ─|" in lines[3]
    assert lines[3].split()[:2] == ["0.006477", "6"]
    lines = ladder("pmtu-discovery.pcap", 0)
    icmp = [x for x in lines if "ICMP 3/4 from 10.77.1.1: MTU 1280, Fragmentation" in x]
    assert len(icmp) == 5 and all("|◀─" in x for x in icmp), "toward the client, whose segment"
    assert "… 7 data segments" in lines[lines.index(icmp[0]) - 1], "a fold stops before them"


def _with_ignored_icmp(src: Path, dst: Path) -> None:
    """pmtu-black-hole's recording with a fragmentation-needed error from the router (MTU
    1280) after the client's first full-size segment: an error that reached the client's
    capture point and was ignored (a host firewall dropping ICMP after the capture)."""
    import struct

    data = src.read_bytes()
    out = bytearray(data[:24])
    pos, done = 24, False
    while pos < len(data):
        sec, frac, cap, wire = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + cap]
        out += data[pos : pos + 16 + cap]
        pos += 16 + cap
        if not done and wire == 1514:
            done = True
            ip = frame[14:]
            quote = ip[:548]
            icmp = struct.pack("!BBHHH", 3, 4, 0, 0, 1280) + quote
            total = 20 + len(icmp)
            hdr = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0xC0, total, 7, 0, 64, 1, 0,
                bytes([10, 77, 1, 1]), ip[12:16],
            )  # fmt: skip
            pkt = frame[6:12] + frame[0:6] + b"\x08\x00" + hdr + icmp
            out += struct.pack("<IIII", sec, frac + 1000, len(pkt), len(pkt)) + pkt
    dst.write_bytes(bytes(out))


def test_ignored_packet_too_big_is_still_a_black_hole(tmp_path: Path) -> None:
    path = tmp_path / "ignored.pcap"
    _with_ignored_icmp(LAB / "pmtu-black-hole.pcap", path)
    report = diagnose_files([str(path)])
    kinds = [(f.kind, f.severity.label, f.streams) for f in report.findings]
    assert kinds == [("pmtu-black-hole", "error", [0]), ("pmtu-black-hole", "error", [1])]
    f = report.findings[0]
    assert "MTU 1280" in f.explanation and "kept sending full-size segments" in f.explanation
    assert f.facts["path_mtu"] == "1280 bytes (the router's packet-too-big)"
    assert any("ICMP 3/4" in s.packet for s in f.timeline)
