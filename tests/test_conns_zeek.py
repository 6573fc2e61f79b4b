"""Connection records against the conn.log Zeek wrote for each trace of the Zeek corpus.

Rows are matched by the unordered pair of endpoints (several rows may share
one: Zeek cuts a 4-tuple into several connections on its timers), then the
candidate agreeing best is taken. Agreement is printed; the test fails below
99 % for conn_state, 95 % for history and for packet and byte counts, over the
rows whose packets the decoder delivers. Rows it cannot (tunnels it does not
open, IP fragments it does not reassemble) are printed and counted apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tcpwhy.capture import read_table
from tcpwhy.tcp.connections import (
    DEFAULT_LIKELY_SERVER_PORTS,
    ConnRecord,
    build_connections,
    zeek_ports,
)


def parse_conn_log(path: Path) -> list[dict[str, str]]:
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


def records_for(entry: dict[str, Any], corpus: Path) -> list[ConnRecord]:
    ports = (
        zeek_ports(entry["zeek_scripts"]) if entry["flags"]["bare"] else DEFAULT_LIKELY_SERVER_PORTS
    )
    check = not entry["flags"]["ignore_checksums"]
    table = read_table(str(corpus / entry["trace_file"]), checksums=check, teredo_any_port=True)
    return build_connections(
        table, boundaries="zeek", likely_server_ports=ports, check_checksums=check
    )


def _score(r: ConnRecord, z: dict[str, str]) -> int:
    return (
        (r.conn_state == z["conn_state"])
        + (r.history == z["history"])
        + (str(r.orig_pkts) == z.get("orig_pkts"))
    )


def compare(corpus: Path) -> tuple[dict[str, int], list[str]]:
    manifest = json.loads((corpus / "manifest.json").read_text())
    tally = dict.fromkeys(
        ("rows", "undecoded", "matched", "conn_state", "history", "pkts", "bytes", "ip_bytes"), 0
    )
    notes: list[str] = []
    for entry in manifest:
        zrows = parse_conn_log(corpus / entry["conn_log"])
        recs = records_for(entry, corpus)
        pool: dict[frozenset[tuple[str, int]], list[ConnRecord]] = {}
        for r in recs:
            pool.setdefault(frozenset({(r.orig_h, r.orig_p), (r.resp_h, r.resp_p)}), []).append(r)
        for z in zrows:
            tally["rows"] += 1
            if "id.orig_h" in z:
                key = frozenset(
                    {(z["id.orig_h"], int(z["id.orig_p"])), (z["id.resp_h"], int(z["id.resp_p"]))}
                )
                cands = pool.get(key, [])
            else:
                cands = next(iter(pool.values()), [])
            if not cands:
                tally["undecoded"] += 1
                notes.append(f"{entry['id']}: no packets decoded for {z.get('id.orig_h')}")
                continue
            best = max(cands, key=lambda r, z=z: _score(r, z))
            cands.remove(best)
            tally["matched"] += 1
            ok = {
                "conn_state": best.conn_state == z["conn_state"],
                "history": best.history == z["history"],
                "pkts": (str(best.orig_pkts), str(best.resp_pkts))
                == (z["orig_pkts"], z["resp_pkts"]),
                "bytes": z.get("orig_bytes", "-") == "-"
                or (str(best.orig_bytes), str(best.resp_bytes))
                == (z["orig_bytes"], z["resp_bytes"]),
                "ip_bytes": "orig_ip_bytes" not in z
                or (str(best.orig_ip_bytes), str(best.resp_ip_bytes))
                == (z["orig_ip_bytes"], z["resp_ip_bytes"]),
            }
            for k, v in ok.items():
                tally[k] += v
            if not all(ok.values()):
                notes.append(
                    f"{entry['id']}: zeek {z['conn_state']} {z['history']} "
                    f"{z['orig_pkts']}/{z['resp_pkts']} pkts; tcpwhy {best.conn_state} "
                    f"{best.history} {best.orig_pkts}/{best.resp_pkts} pkts"
                )
    return tally, notes


def test_agreement_with_zeek(zeek_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tally, notes = compare(zeek_corpus)
    n = tally["matched"]
    assert n > 100
    share = {k: tally[k] / n for k in ("conn_state", "history", "pkts", "bytes", "ip_bytes")}
    with capsys.disabled():
        print(f"\nZeek corpus: {tally['rows']} TCP rows, {tally['undecoded']} not decoded")
        for k, v in share.items():
            print(
                f"  {k:<10} {tally[k]:>4}/{n} = {v:.1%}  (of all rows: {tally[k] / tally['rows']:.1%})"
            )
        for line in notes:
            print("  ", line)
    assert share["conn_state"] >= 0.99
    assert share["history"] >= 0.95
    assert share["pkts"] >= 0.95
    assert share["bytes"] >= 0.95


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
