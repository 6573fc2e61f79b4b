"""Per-connection server names (SNI, or the Host of cleartext HTTP) against tshark 4.0.

tests/data/tls/server_names.tsv (made by tests/data/tls/generate_names.sh) holds tshark's
``tls.handshake.extensions_server_name`` of each ClientHello and ``http.host`` of each
request, with their ``tcp.stream``, on every lab recording: a stream's name is its
hello's SNI, else the host (port removed) of its first request, else empty.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.capture.writer import LINKTYPE_ETHERNET, PcapWriter
from tcpwhy.decode.table import PacketTable
from tcpwhy.lab.packets import internet_checksum as csum
from tcpwhy.lab.packets import pseudo_header
from tcpwhy.tcp.server_names import NAME_MAX, Names, client_rows, server_names
from tcpwhy.tcp.streams import StreamTracker
from tests.gates import need

HERE = Path(__file__).resolve().parent
LAB = HERE.parent / "src" / "tcpwhy" / "data" / "lab"
REFS = HERE / "data" / "tls"
CAPTURES = [*sorted(p.name for p in LAB.glob("*.pcap")), "clean-tls-v6-close-crossing.pcap"]


def _expected(capture: str) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for line in (REFS / "server_names.tsv").read_text().splitlines():
        cap, stream, sni, host = [*line.split("\t"), "", "", ""][:4]
        if cap != capture:
            continue
        s = int(stream)
        if s in out:
            continue  # the stream's first hello or request names it
        name = sni or (host.rsplit(":", 1)[0] if host.count(":") == 1 else host)
        out[s] = name.encode()
    return out


def _names(table: PacketTable) -> tuple[Names, int]:
    st = StreamTracker().feed(table)
    ns = int(st["stream"].max()) + 1
    return server_names(table, st["stream"], client_rows(table, st["stream"], st["dir"])), ns


def test_reference_names_tls_and_cleartext() -> None:
    caps = {line.split("\t")[0] for line in (REFS / "server_names.tsv").read_text().splitlines()}
    assert {"clean-tls.pcap", "clean.pcap"} <= caps


@pytest.mark.parametrize("capture", CAPTURES)
def test_server_names_match_tshark(capture: str) -> None:
    path = LAB / capture if (LAB / capture).exists() else REFS / capture
    table = read_table(str(path))
    names, ns = _names(table)
    want = _expected(capture)
    got = {s: names.name(s) for s in range(ns)}
    assert got == {s: want.get(s, b"") for s in range(ns)}
    words, code = names.words()
    assert words[0] == b"" and len(set(words)) == len(words)
    assert [words[c] for c in code.tolist()] == [got[s] for s in range(ns)]


def test_cut_and_hostile_payloads_are_bounded() -> None:
    """A hello cut by the snaplen names nothing (no invented name); garbage after a TLS
    or HTTP start is read within the captured bytes only."""
    full = read_table(str(LAB / "clean-tls.pcap"))
    cols = dict(full.cols)
    cols["payload_cap"] = np.minimum(cols["payload_cap"], 100).astype(cols["payload_cap"].dtype)
    names, ns = _names(PacketTable(cols, full.data))
    assert ns == 2 and not names.length.any()
    # overwrite each hello after its handshake header with 0xff: lengths point past the end
    data = full.data.copy()
    for r in np.flatnonzero(full["payload_len"] == 517).tolist():
        o = int(full["payload_off"][r])
        data[o + 9 : o + 517] = 0xFF
    names, _ = _names(PacketTable(dict(full.cols), data))
    assert not names.length.any() and names.chars.shape[1] == NAME_MAX


def _chunks(table: PacketTable, size: int) -> list[PacketTable]:
    return [table.take(np.arange(a, min(a + size, len(table)))) for a in range(0, len(table), size)]


@pytest.mark.parametrize("capture", CAPTURES)
def test_conns_records_carry_tshark_names(capture: str) -> None:
    """`server_name` of every `conns` record is tshark's name of its stream, whole or read a
    packet at a time (the naming payload is chunks before the record is written)."""
    from tcpwhy.tcp.connections import connection_columns, iter_connection_columns
    from tcpwhy.tcp.records import ConnColumns

    path = LAB / capture if (LAB / capture).exists() else REFS / capture
    table = read_table(str(path))
    want = _expected(capture)
    whole = connection_columns(table)
    one = ConnColumns.concat(list(iter_connection_columns(_chunks(table, 1)))).stream_order()
    for c in (whole, one):
        assert c.name_words[0] == ""
        got = [c.name_words[k] for k in c["server_name"].tolist()]
        assert got == [want.get(s, b"").decode() for s in c["stream"].tolist()]
        assert [r.server_name for r in c.records()] == got


def test_conns_writes_server_names_in_jsonl_and_csv_only() -> None:
    """jsonl has ``server_name`` only where there is one, csv always (empty when none); the
    compiled writer and the per-record definition agree; Zeek's formats are unchanged."""
    import csv
    import io
    import json

    from tcpwhy.report.conns import record_lines
    from tcpwhy.report.conns_format import format_columns
    from tcpwhy.tcp.connections import connection_columns

    c = connection_columns(read_table(str(LAB / "clean-tls.pcap")))
    want = _expected("clean-tls.pcap")
    assert {v for v in want.values()} == {b"api.tcpwhy.test"}
    for fmt in ("jsonl", "csv", "zeek", "zeek-json", "table"):
        assert format_columns(c, fmt) == record_lines(c.records(), fmt)
    lines = [json.loads(x) for x in format_columns(c, "jsonl").splitlines()]
    assert [d["server_name"] for d in lines] == ["api.tcpwhy.test"] * len(c)
    for fmt in ("zeek", "zeek-json"):
        assert "api.tcpwhy.test" not in format_columns(c, fmt)
    # hostile names: escaped as JSON and csv text, absent (jsonl) or empty (csv) when none
    c.name_words = ("", 'q"uo\\te\n,x', "é")
    c.cols["server_name"] = (np.arange(len(c)) % 3).astype(np.int32)
    text = format_columns(c, "jsonl")
    assert text == record_lines(c.records(), "jsonl")
    got = [json.loads(x).get("server_name") for x in text.splitlines()]
    assert got == [[None, 'q"uo\\te\n,x', "é"][i % 3] for i in range(len(c))]
    text = format_columns(c, "csv")
    assert text == record_lines(c.records(), "csv")
    from tcpwhy.report.conns import CSV_FIELDS

    col = CSV_FIELDS.index("server_name")
    got = [r[col] for r in csv.reader(io.StringIO(text))]
    assert got == [["", 'q"uo\\te\n,x', "é"][i % 3] for i in range(len(c))]


def test_parquet_and_api_tables_carry_server_names() -> None:
    from tcpwhy.report.parquet import conn_table
    from tcpwhy.tcp.connections import connection_columns

    c = connection_columns(read_table(str(LAB / "clean.pcap")))
    want = _expected("clean.pcap")
    names = [want.get(s, b"").decode() for s in c["stream"].tolist()]
    assert any(names)
    assert conn_table(c).column("server_name").to_pylist() == names
    from tcpwhy.api import _connection_table

    t = _connection_table(c)
    words = t.schema["server_name"].words
    assert words is not None
    assert [words[k] for k in t["server_name"].tolist()] == names


# (frame, cuts) of clean-tls.pcap's two ClientHellos (517 bytes, the host name at 127-141):
# cut in the server_name extension's header, inside the name, after a one-byte first
# segment, and into many pieces
_SPLIT_HELLOS: dict[str, dict[int, list[int]] | None] = {
    "first-header-cut": None,  # tests/data/tls/clean-tls-first-header-cut.pcap, as shipped
    "in-name": {4: [120], 18: [130, 300]},
    "one-byte-then-many": {4: [1, 5, 9, 60, 125, 135], 18: [3]},
}


def _resegment(src: Path, dst: Path, plan: dict[int, list[int]]) -> Path:
    """`src` (Ethernet, IPv4) with the TCP payload of each frame in `plan` cut at its offsets
    into segments of their own (headers and options copied, lengths, sequence numbers and
    checksums recomputed, a microsecond apart), as tests/data/tls/resegment.py does."""
    raw = src.read_bytes()
    little = raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    nano = raw[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    e = "<" if little else ">"
    assert struct.unpack(e + "I", raw[20:24])[0] == LINKTYPE_ETHERNET
    with PcapWriter.open(str(dst), LINKTYPE_ETHERNET) as w:
        p, n = 24, 0
        while p < len(raw):
            sec, frac, incl, _orig = struct.unpack(e + "IIII", raw[p : p + 16])
            frame = raw[p + 16 : p + 16 + incl]
            p += 16 + incl
            n += 1
            ts = sec * 10**9 + frac * (1 if nano else 1000)
            if n not in plan:
                w.write(ts, frame)
                continue
            ihl = (frame[14] & 15) * 4
            t0 = 14 + ihl
            doff = (frame[t0 + 12] >> 4) * 4
            head, ip_head = frame[t0 : t0 + doff], frame[14:t0]
            ip_end = 14 + struct.unpack("!H", frame[16:18])[0]
            data = frame[t0 + doff : ip_end]
            seq = struct.unpack("!I", head[4:8])[0]
            bounds = [0, *plan[n], len(data)]
            for k, (a, b) in enumerate(itertools.pairwise(bounds)):
                seg = bytearray(head + data[a:b])
                seg[4:8] = struct.pack("!I", (seq + a) & 0xFFFFFFFF)
                seg[16:18] = b"\0\0"
                s_ip, d_ip = ip_head[12:16], ip_head[16:20]
                seg[16:18] = struct.pack("!H", csum(pseudo_header(s_ip, d_ip, 6, len(seg)) + seg))
                iph = bytearray(ip_head)
                iph[2:4] = struct.pack("!H", ihl + len(seg))
                iph[10:12] = b"\0\0"
                iph[10:12] = struct.pack("!H", csum(bytes(iph)))
                w.write(ts + k * 1000, frame[:14] + bytes(iph) + bytes(seg))
    return dst


def _split_hellos(tmp_path: Path, case: str) -> Path:
    plan = _SPLIT_HELLOS[case]
    if plan is None:
        return REFS / "clean-tls-first-header-cut.pcap"
    return _resegment(LAB / "clean-tls.pcap", tmp_path / f"{case}.pcap", plan)


def _tshark_sni(path: Path) -> dict[int, bytes]:
    need(shutil.which("tshark") is not None, "tshark not installed")
    text = subprocess.run(
        [
            *("tshark", "-n", "-r", str(path), "-d", "tcp.port==8080,tls"),
            *("-Y", "tls.handshake.type == 1", "-T", "fields"),
            *("-e", "tcp.stream", "-e", "tls.handshake.extensions_server_name"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {int(s): n.encode() for s, n in (line.split("\t") for line in text.splitlines())}


@pytest.mark.parametrize("case", sorted(_SPLIT_HELLOS))
def test_hello_longer_than_its_first_segment_is_named_as_tshark(tmp_path: Path, case: str) -> None:
    """A ClientHello whose first segment is shorter than the hello (a partial write of a
    few bytes, a large hello whose name comes late) is followed into its next segments:
    every `conns` record, whole or a packet at a time, and the whole-table names carry
    tshark's SNI of the reassembled hello."""
    from tcpwhy.tcp.connections import connection_columns, iter_connection_columns
    from tcpwhy.tcp.records import ConnColumns

    path = _split_hellos(tmp_path, case)
    table = read_table(str(path))
    hellos = table["payload_len"][(table["payload_len"] > 0) & (table["dport"] == 8080)]
    assert hellos[0] < 517  # the first client segment holds part of the hello only
    want = _tshark_sni(path)
    assert set(want) == {0, 1} and set(want.values()) == {b"api.tcpwhy.test"}
    names, ns = _names(table)
    assert {s: names.name(s) for s in range(ns)} == want
    whole = connection_columns(table)
    one = ConnColumns.concat(list(iter_connection_columns(_chunks(table, 1)))).stream_order()
    for c in (whole, one):
        got = {
            s: c.name_words[k].encode()
            for s, k in zip(c["stream"].tolist(), c["server_name"].tolist(), strict=True)
        }
        assert got == want


def test_hello_continued_past_a_gap_or_cut_names_nothing() -> None:
    """The hello's next segment missing (a gap) or cut by the snaplen: no name is made up
    from the bytes around it; the other connection, whole, keeps its name."""
    from tcpwhy.tcp.connections import connection_columns

    full = read_table(str(REFS / "clean-tls-first-header-cut.pcap"))
    # stream 0's hello: 3 bytes, 97, then the rest; drop the 97 (gap) / cut it (snaplen)
    client = np.flatnonzero((full["payload_len"] > 0) & (full["dport"] == 8080))
    middle = int(client[1])
    assert int(full["payload_len"][middle]) == 97
    gap = full.take(np.flatnonzero(np.arange(len(full)) != middle))
    cols = dict(full.cols)
    cols["payload_cap"] = cols["payload_cap"].copy()
    cols["payload_cap"][middle] = 50
    cut = PacketTable(cols, full.data)
    for table in (gap, cut):
        names, ns = _names(table)
        assert [names.name(s) for s in range(ns)] == [b"", b"api.tcpwhy.test"]
        c = connection_columns(table)
        assert [c.name_words[k] for k in c["server_name"].tolist()] == ["", "api.tcpwhy.test"]


def _blocked(table: PacketTable, streams: int, monkeypatch: pytest.MonkeyPatch) -> Names:
    import tcpwhy.tcp.server_names as sn

    monkeypatch.setattr(sn, "_NAME_STREAMS", streams)
    return _names(table)[0]


def test_names_read_back_in_blocks_of_streams_as_in_one(
    zeek_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`server_names` reads the first client payloads back a block of streams at a time:
    the words (b"" first, then by length and bytes) and each stream's code are the same
    however small the blocks, on the lab's and Zeek's recordings."""
    paths = [LAB / c for c in CAPTURES if (LAB / c).exists()]
    paths += sorted(zeek_corpus.glob("*.pcap")) + sorted(zeek_corpus.glob("*.trace"))
    several = 0
    for path in paths:
        try:
            table = read_table(str(path))
        except Exception:  # not a capture tcpwhy reads: nothing to name
            continue
        if not len(table):
            continue
        whole = _blocked(table, 1 << 30, monkeypatch).words()
        for size in (1, 3):
            words, code = _blocked(table, size, monkeypatch).words()
            assert words == whole[0], (path.name, size)
            assert np.array_equal(code, whole[1]), (path.name, size)
        several += len(whole[0]) > 2
    assert several >= 2  # captures naming more than one server: the blocks' order matters
