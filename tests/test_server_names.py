"""Per-connection server names (SNI, or the Host of cleartext HTTP) against tshark 4.0.

tests/data/tls/server_names.tsv (made by tests/data/tls/generate_names.sh) holds tshark's
``tls.handshake.extensions_server_name`` of each ClientHello and ``http.host`` of each
request, with their ``tcp.stream``, on every lab recording: a stream's name is its
hello's SNI, else the host (port removed) of its first request, else empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.decode.table import PacketTable
from tcpwhy.tcp.server_names import NAME_MAX, Names, client_rows, server_names
from tcpwhy.tcp.streams import StreamTracker

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
