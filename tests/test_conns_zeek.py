"""Connection records against the conn.log Zeek wrote for each trace of the Zeek corpus.

Every TCP row of every log is compared with the record tcpwhy builds for it, on conn_state,
history, packets, payload bytes and IP bytes (each way), as tcpwhy writes them in its own
conn.log (`zeek_row`: a byte count Zeek leaves unset must be unset here too). Rows are
matched by the unordered pair of endpoints (several rows may share one: Zeek cuts a 4-tuple
into several connections on its timers), then the candidate agreeing best is taken.

Agreement is exact up to LEDGER, the one list of known differences, each with the reason
read from the packets. The test fails on a difference the ledger does not hold and on a
ledger entry that no longer occurs, so a fix shows up as a stale entry to delete. A Zeek row
with no packets decoded, or a tcpwhy record with no Zeek row, is a difference too (field
``row``). docs/conns.md quotes the figures; a test checks that it quotes these.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tcpwhy.capture import read_table
from tcpwhy.report.conns import ZEEK_FIELDS, zeek_json_line, zeek_row
from tcpwhy.tcp.connections import (
    DEFAULT_LIKELY_SERVER_PORTS,
    ConnRecord,
    build_connections,
    connection_columns,
    zeek_ports,
)
from tcpwhy.tcp.records import RecordOptions, parse_local_nets

DOCS = Path(__file__).resolve().parents[1] / "docs" / "conns.md"

COMPARED = (
    "conn_state",
    "history",
    "orig_pkts",
    "resp_pkts",
    "orig_bytes",
    "resp_bytes",
    "orig_ip_bytes",
    "resp_ip_bytes",
)
"""conn.log columns compared, where the log has them (one log was cut down by its test)."""


class Diff(NamedTuple):
    """One difference: trace, Zeek uid (or the 5-tuple of a record Zeek has no row for),
    field, Zeek's value, tcpwhy's value."""

    trace: str
    conn: str
    field: str
    zeek: str
    tcpwhy: str


# --- the ledger: every difference left, and why ---------------------------------------
GRIDFTP = (
    "Zeek's gridftp script (size_threshold redefined to 2 by the test) calls "
    "skip_further_processing once the TLS data channel is set up (frame 50): its last 5 "
    "packets (frames 51-57), both FINs among them, go uncounted; tcpwhy has no app analyzers"
)
TSO = (
    "one client frame has IPv4 total length 0 (segmentation offload on the capturing host): "
    "Zeek adds the header's 0, tcpwhy's decoder the length captured (the difference)"
)
PPPOE = (
    "six server ACKs carry IP total length 46 in a PPPoE payload of 42: their checksum holds "
    "over the IP length, as Zeek checks it, so both count them; but tcpwhy's decoder stops at "
    "the PPPoE length (as tshark) and sees no payload, where Zeek takes 6-byte segments below "
    "the highest sequence number, retransmissions that bring the responder's 10th (t) sooner"
)
AMSDU = (
    "the only frame is an Aruba A-MSDU holding two TCP segments (IP lengths 281 and 75); "
    "tcpwhy's decoder reads the first subframe only"
)
GTP = "Zeek's X ('analysis partial', e.g. a limit hit) is not modelled by tcpwhy"

LEDGER: dict[Diff, str] = {
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "conn_state", "S1", "SF"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "history", "ShADad", "ShADadfF"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "orig_pkts", "7", "9"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "resp_pkts", "6", "9"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "orig_bytes", "2109", "2135"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "resp_bytes", "3196", "3213"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "orig_ip_bytes", "2481", "2611"): GRIDFTP,
    Diff("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "resp_ip_bytes", "3516", "3689"): GRIDFTP,
    Diff("ldap-sasl-signed-clear", "CHhAvVGS1DHFjwGM9", "orig_ip_bytes", "2595", "4443"): TSO,
    Diff("ldap-sasl-signed-clear", "ClEkJM2Vm5giqnMf4h", "orig_ip_bytes", "990", "2870"): TSO,
    Diff("ldap-sasl-signed-clear", "C4J4Th3PJpwUYZZ6gc", "orig_ip_bytes", "463", "2343"): TSO,
    Diff("ldap-sasl-signed-clear-2", "CHhAvVGS1DHFjwGM9", "orig_ip_bytes", "1733", "3618"): TSO,
    Diff("pppoe-over-qinq", "CHhAvVGS1DHFjwGM9", "history", "ShADdtaTTtFf", "ShADdtaTTFft"): PPPOE,
    Diff("tunnels-gre-aruba-amsdu", "ClEkJM2Vm5giqnMf4h", "orig_pkts", "2", "1"): AMSDU,
    Diff("tunnels-gre-aruba-amsdu", "ClEkJM2Vm5giqnMf4h", "orig_ip_bytes", "356", "281"): AMSDU,
    Diff("tunnels-gtp-different-dl-and-ul", "ClEkJM2Vm5giqnMf4h", "history", "ShADadXf", "ShADadf"): GTP,
}  # fmt: skip


def parse_conn_log(path: Path) -> list[dict[str, str]]:
    """The TCP rows of a btest baseline (full log, or cut down with a header of its own)."""
    fields: list[str] | None = None
    rows = []
    for line in path.read_text().splitlines()[1:]:  # btest banner
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line.startswith("#"):
            continue
        elif fields is None:
            fields = line.split("\t")  # cut-minimal-header: first line names the columns
        else:
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return [r for r in rows if r.get("proto", "tcp") == "tcp"]


def records_for(
    entry: dict[str, Any], corpus: Path, options: RecordOptions | None = None
) -> list[ConnRecord]:
    """tcpwhy's records for a trace, with the settings Zeek ran with (-b ports, -C);
    `options` for the fields derived when writing (local networks)."""
    ports = (
        zeek_ports(entry["zeek_scripts"]) if entry["flags"]["bare"] else DEFAULT_LIKELY_SERVER_PORTS
    )
    check = not entry["flags"]["ignore_checksums"]
    table = read_table(str(corpus / entry["trace_file"]), checksums=check, teredo_any_port=True)
    if options is None:
        return build_connections(
            table, boundaries="zeek", likely_server_ports=ports, check_checksums=check
        )
    c = connection_columns(
        table, boundaries="zeek", likely_server_ports=ports, check_checksums=check
    )
    return c.with_options(options).records()


def _as_logged(r: ConnRecord) -> dict[str, str]:
    return dict(zip((f for f, _ in ZEEK_FIELDS), zeek_row(r), strict=True))


def _score(t: dict[str, str], z: dict[str, str]) -> int:
    return sum(t[f] == z[f] for f in ("conn_state", "history", "orig_pkts") if f in z)


def _endpoints(a: str, ap: str | int, b: str, bp: str | int) -> frozenset[tuple[str, int]]:
    return frozenset({(a, int(ap)), (b, int(bp))})


@dataclass
class Comparison:
    """What the comparison found: counts per field and every difference."""

    logs: int = 0
    rows: int = 0
    matched: int = 0
    compared: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMPARED, 0))
    agree: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMPARED, 0))
    diffs: list[Diff] = field(default_factory=list)

    def undecoded(self) -> int:
        return sum(d.field == "row" and d.tcpwhy == "-" for d in self.diffs)

    def figures(self) -> str:
        """The Markdown table docs/conns.md quotes."""
        lines = [
            f"{self.rows} TCP rows in {self.logs} logs, {self.matched} matched to a tcpwhy "
            f"record, {self.undecoded()} with no packets decoded:",
            "",
            "| field | agree |",
            "|---|---|",
        ]
        lines += [f"| `{f}` | {self.agree[f]} of {self.compared[f]} |" for f in COMPARED]
        rows = {(d.trace, d.conn) for d in self.diffs}
        traces = {d.trace for d in self.diffs}
        lines += [
            "",
            f"Differences: {len(self.diffs)}, on {len(rows)} rows of {len(traces)} traces.",
        ]
        return "\n".join(lines)


LOCAL_NETS = RecordOptions(local_nets=parse_local_nets("private"))
"""Zeek 6 and later count its private address space as local by default
(``Site::private_address_space_is_local``): the corpus logs were written so."""


class Match(NamedTuple):
    """A row of Zeek's log and the tcpwhy record matched to it (None: no record)."""

    zeek: dict[str, str]
    record: ConnRecord | None
    logged: dict[str, str] | None  # the record as tcpwhy's conn.log writes it


@functools.cache
def matches(corpus: Path) -> tuple[list[tuple[str, list[Match], list[ConnRecord]]], ...]:
    """Per log: its id, every TCP row with the record matched to it (by the unordered pair
    of endpoints, then the candidate agreeing best), and the records left unmatched. The
    records are written with `LOCAL_NETS`."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    out = []
    for entry in manifest:
        left = [
            (r, _as_logged(r), _endpoints(r.orig_h, r.orig_p, r.resp_h, r.resp_p))
            for r in records_for(entry, corpus, LOCAL_NETS)
        ]
        rows = []
        for z in parse_conn_log(corpus / entry["conn_log"]):
            if "id.orig_h" in z:
                key = _endpoints(z["id.orig_h"], z["id.orig_p"], z["id.resp_h"], z["id.resp_p"])
                cands = [c for c in left if c[2] == key]
            else:
                cands = left  # a log cut down to a few columns: the trace's records
            if not cands:
                rows.append(Match(z, None, None))
                continue
            best = max(cands, key=lambda c, z=z: _score(c[1], z))
            left.remove(best)
            rows.append(Match(z, best[0], best[1]))
        out.append((entry["id"], rows, [r for r, _, _ in left]))
    return tuple(out)


@functools.cache
def compare(corpus: Path) -> Comparison:
    """Every TCP row of every log of the corpus against tcpwhy's records."""
    out = Comparison()
    for trace, rows, left in matches(corpus):
        out.logs += 1
        for z, _, t in rows:
            out.rows += 1
            if t is None:
                out.diffs.append(Diff(trace, z["uid"], "row", "logged", "-"))
                continue
            out.matched += 1
            for f in COMPARED:
                if f not in z:
                    continue
                out.compared[f] += 1
                if t[f] == z[f]:
                    out.agree[f] += 1
                else:
                    out.diffs.append(Diff(trace, z["uid"], f, z[f], t[f]))
        for r in left:
            five = f"tcp {r.orig_h}:{r.orig_p} > {r.resp_h}:{r.resp_p}"
            out.diffs.append(Diff(trace, five, "row", "-", r.conn_state))
    return out


def test_agreement_with_zeek(zeek_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exact agreement on every row and field, but for the ledger's entries."""
    cmp = compare(zeek_corpus)
    with capsys.disabled():
        print(f"\nZeek corpus: {cmp.figures()}")
        for d in cmp.diffs:
            known = "ledger" if d in LEDGER else "NOT IN LEDGER"
            print(f"   [{known}] {d.trace} {d.conn} {d.field}: zeek {d.zeek}, tcpwhy {d.tcpwhy}")
    unexplained = [d for d in cmp.diffs if d not in LEDGER]
    stale = [d for d in LEDGER if d not in cmp.diffs]
    assert len(set(cmp.diffs)) == len(cmp.diffs)
    assert not unexplained, "differences not in the ledger:\n" + "\n".join(map(str, unexplained))
    assert not stale, "ledger entries that no longer occur:\n" + "\n".join(map(str, stale))
    assert cmp.matched > 100  # the corpus was read


def test_docs_quote_the_figures(zeek_corpus: Path) -> None:
    """docs/conns.md quotes the figures the comparison gives today."""
    assert compare(zeek_corpus).figures() in DOCS.read_text()


def test_zeek_boundaries_split_a_stream_where_zeek_does(zeek_corpus: Path) -> None:
    """A one-way capture: Zeek's attempt timer ends the SYN's record after 5 s, then starts anew."""
    table = read_table(str(zeek_corpus / "ssh-half-duplex-client.pcap"))
    stream_recs = [r for r in build_connections(table) if r.stream == 0]
    zeek_recs = [r for r in build_connections(table, boundaries="zeek") if r.stream == 0]
    assert len(stream_recs) == 1
    assert [r.conn_state for r in zeek_recs] == ["S0", "SH"]
    assert zeek_recs[0].emitted == "connection attempt timed out"
    assert zeek_recs[1].continued
    assert sum(r.orig_pkts for r in zeek_recs) == stream_recs[0].orig_pkts


def test_local_orig_and_local_resp_as_zeek(zeek_corpus: Path) -> None:
    """With Zeek's default local networks (its private address space), local_orig and
    local_resp are what Zeek logged, on every row of every log that kept the columns."""
    checked = 0
    for trace, rows, _ in matches(zeek_corpus):
        for z, _, t in rows:
            if "local_orig" not in z or t is None:
                continue
            assert (t["local_orig"], t["local_resp"]) == (z["local_orig"], z["local_resp"]), (
                trace,
                z["uid"],
            )
            checked += 1
    assert checked > 100


def _zeek_json_value(text: str, kind: str) -> Any:
    """A conn.log field as Zeek's JSON writer writes it (the log's #types)."""
    if kind in ("count", "port"):
        return int(text)
    if kind in ("time", "interval", "double"):
        return float(text)
    if kind == "bool":
        return text == "T"
    if kind.startswith(("set[", "vector[")):
        return [] if text == "(empty)" else text.split(",")
    return text


def zeek_log_as_json(z: dict[str, str]) -> dict[str, Any]:
    """A row of Zeek's ASCII conn.log as its JSON log has it: the same keys in the same
    order, unset fields (``-``) left out, values typed (btest's mask of ``ts`` is kept)."""
    types = dict(ZEEK_FIELDS)
    return {
        k: v if "XXXX" in v else _zeek_json_value(v, types[k]) for k, v in z.items() if v != "-"
    }


JSON_LEDGER: dict[tuple[str, str, str], str] = {
    ("ftp-gridftp", "ClEkJM2Vm5giqnMf4h", "duration"): GRIDFTP,
}
"""Differences in fields the main comparison (COMPARED) leaves out, with their reasons."""

NOT_MODELLED = {"service", "tunnel_parents"}
"""Keys Zeek writes that tcpwhy leaves out (no application analyzers, no tunnel uids)."""


def test_zeek_json_as_zeek_would_write_it(zeek_corpus: Path) -> None:
    """--format zeek-json against Zeek's logs turned into Zeek's JSON: for every matched row
    the same keys in Zeek's order (unset ones left out: a zero duration's byte counts, an
    empty history), then the values: addresses, ports, protocol, conn_state, local_orig and
    local_resp, missed_bytes, history and the counters as Zeek logged them (the ledger's
    differences apart), and the duration to a microsecond. ts is masked in the corpus;
    community_id is not in these logs (test_community_id.py checks it)."""
    ledger = {(d.trace, d.conn, d.field) for d in LEDGER} | set(JSON_LEDGER)
    n = 0
    diffs = []
    for trace, rows, _ in matches(zeek_corpus):
        for z, r, _ in rows:
            if r is None:
                continue
            want = zeek_log_as_json(z)
            got = json.loads(zeek_json_line(r))
            assert UID.fullmatch(got.pop("uid")) and got.pop("community_id").startswith("1:")
            ts = got.pop("ts")
            assert isinstance(ts, float) and ts == round(r.start, 6)
            want.pop("uid")
            want.pop("ts", None)
            if "local_orig" not in z:  # a log whose test cut these columns away
                del got["local_orig"], got["local_resp"]
            keys = [k for k in want if k not in NOT_MODELLED]
            if "id.orig_h" in z:  # a full log: the same keys, in the same order
                assert list(got) == keys, (trace, z["uid"])
            for k in keys:
                if k == "duration" and got[k] == pytest.approx(want[k], abs=1.01e-6):
                    continue
                if got.get(k) != want[k]:
                    diffs.append((trace, z["uid"], k, want[k], got.get(k)))
            n += 1
    assert n > 100
    assert [d for d in diffs if d[:3] not in ledger] == []
    assert set(JSON_LEDGER) <= {d[:3] for d in diffs}  # no stale entry


UID = re.compile(r"C[0-9a-zA-Z]{2,17}")


def test_corpus_uids_have_the_shape_tcpwhy_writes(zeek_corpus: Path) -> None:
    """The uids in Zeek's logs: C and 2 to 17 base-62 characters, as tcpwhy makes them; the
    lengths seen (18, 17, 16 characters) are those of two words written without padding."""
    lengths = set()
    for _, rows, _ in matches(zeek_corpus):
        for z, _, _ in rows:
            assert UID.fullmatch(z["uid"]), z["uid"]
            lengths.add(len(z["uid"]))
    assert max(lengths) == 18 and len(lengths) > 1
