"""Pairing in `conns` and `flow`: the shipped recording made at both ends of a 60 ms path
through a middlebox that forgets idle flows (the relay delayed each way by 30 ms, dropped 3
client segments and injected 2 RSTs: tests/test_pairing.py checks those numbers against the
relay's log).

References independent of the pairing code: the single-file outputs, a multiset comparison
of the two captures' packets (`plain_counts`), and the packets' own timestamps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.craft import pcap_records
from tests.schema_check import validate
from tests.test_pairing import CLIENT, DELAY_MS, SERVER, plain_counts


def tcpwhy(*args: str, status: int = 0) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


# ---- conns ------------------------------------------------------------------------------


def test_conns_pairs_the_two_points_into_one_record_each() -> None:
    alone = jsonl(tcpwhy("conns", str(CLIENT), "--format", "jsonl", "--seed", "7"))
    both = jsonl(tcpwhy("conns", str(CLIENT), str(SERVER), "--format", "jsonl", "--seed", "7"))
    assert len(alone) == 4 and len(both) == 4  # not 8: no connection written twice
    for a, b in zip(alone, both, strict=True):
        validate("conns", b)
        assert b.pop("seen_at") == [str(CLIENT), str(SERVER)]
        assert a == b  # the first point's view of it, unchanged
    # the other order: the server side's view, seen at both
    rev = jsonl(tcpwhy("conns", str(SERVER), str(CLIENT), "--format", "jsonl"))
    server_alone = jsonl(tcpwhy("conns", str(SERVER), "--format", "jsonl"))
    assert [r["orig_pkts"] for r in rev] == [r["orig_pkts"] for r in server_alone]
    assert all(r["seen_at"] == [str(SERVER), str(CLIENT)] for r in rev)


def test_conns_no_pair_writes_each_point() -> None:
    out = jsonl(tcpwhy("conns", "--no-pair", str(CLIENT), str(SERVER), "--format", "jsonl"))
    assert len(out) == 8
    assert [r["seen_at"] for r in out] == [[str(CLIENT)]] * 4 + [[str(SERVER)]] * 4
    assert len({r["uid"] for r in out}) == 8  # the points' record numbers do not collide
    for r in out:
        validate("conns", r)


def test_conns_csv_table_and_parquet_agree(tmp_path: Path) -> None:
    lines = tcpwhy("conns", str(CLIENT), str(SERVER), "--format", "csv").splitlines()
    assert lines[0].endswith(",seen_at") and len(lines) == 5
    import csv

    rows = list(csv.DictReader(lines))
    assert {r["seen_at"] for r in rows} == {f"{CLIENT}; {SERVER}"}
    assert [r["stream"] for r in rows] == ["0", "1", "2", "3"]
    table = tcpwhy("conns", str(CLIENT), str(SERVER)).splitlines()
    assert len(table) == 5 and all(f"seen at: {CLIENT} | {SERVER}" in x for x in table[1:])
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "c.parquet"
    tcpwhy("conns", str(CLIENT), str(SERVER), "--format", "parquet", "-o", str(out))
    t = pq.read_table(out)
    assert t.num_rows == 4
    assert t.column("seen_at").to_pylist() == [[str(CLIENT), str(SERVER)]] * 4
    assert t.column("stream").to_pylist() == [0, 1, 2, 3]
    # one capture point: the same columns as before, no seen_at
    one = tmp_path / "one.parquet"
    tcpwhy("conns", str(CLIENT), "--format", "parquet", "-o", str(one))
    assert "seen_at" not in pq.read_table(one).column_names


def _split_pcap(src: Path, a: Path, b: Path) -> None:
    """Rotated files: the first half of a classic pcap's records in `a`, the rest in `b`."""
    _, head, recs = pcap_records(src.read_bytes())
    half = len(recs) // 2
    a.write_bytes(head + b"".join(recs[:half]))
    b.write_bytes(head + b"".join(recs[half:]))


def test_rotated_files_are_joined_not_paired(tmp_path: Path) -> None:
    a, b = tmp_path / "c-1.pcap", tmp_path / "c-2.pcap"
    _split_pcap(CLIENT, a, b)
    whole = tcpwhy("conns", str(CLIENT), "--format", "jsonl", "--seed", "3")
    joined = tcpwhy("conns", str(a), str(b), "--format", "jsonl", "--seed", "3")
    assert joined == whole  # one capture point: no seen_at, the same records
    # frames are numbered in each file, as Wireshark numbers them; the rest is the same
    rows = [flow_doc(*f, "1")["rows"] for f in ((str(a), str(b)), (str(CLIENT),))]
    for r in rows[0] + rows[1]:
        for x in r.get("at", []):
            x.pop("frame")
    assert rows[0] == rows[1]


# ---- flow -------------------------------------------------------------------------------


def flow_doc(*args: str) -> dict[str, Any]:
    doc = json.loads(tcpwhy("flow", *args, "--format", "json"))
    validate("flow", doc)
    return doc


def test_flow_json_between_the_two_points() -> None:
    lost = injected = 0
    delays: list[float] = []
    for stream in range(4):
        doc = flow_doc(str(CLIENT), str(SERVER), str(stream))
        assert doc["points"] == [str(CLIENT), str(SERVER)]
        for d in ("to_server", "to_client"):
            assert abs(doc["delay_ms"][d] - DELAY_MS) < 3
        for r in doc["rows"]:
            at = {x["point"]: x["rel_s"] for x in r["at"]}
            if r["status"] == "both":  # each arrow slants by the delay, in one clock
                delay = at[1] - at[0] if r["direction"] == "to_server" else at[0] - at[1]
                # never faster than the relay holds a segment; a busy relay adds a little
                assert DELAY_MS - 1 < delay * 1e3 < DELAY_MS + 10, r
                delays.append(delay * 1e3)
            lost += r["status"] == "lost"
            injected += r["status"] == "injected"
    assert abs(sorted(delays)[len(delays) // 2] - DELAY_MS) < 3
    assert (lost, injected) == (3, 2)
    dropped, back, made = plain_counts(CLIENT, SERVER)
    assert (lost, injected) == (dropped + back, made)


def test_flow_json_rows_match_the_captures() -> None:
    """Every packet of the connection at either point is in exactly one arrow."""
    doc = flow_doc(str(CLIENT), str(SERVER), "1")
    text = tcpwhy("conns", str(CLIENT), "--format", "jsonl")
    rec = jsonl(text)[1]
    server_rec = jsonl(tcpwhy("conns", str(SERVER), "--format", "jsonl"))[1]
    frames: list[set[int]] = [set(), set()]
    # each sighting's absolute time is that point's own time stamp of the frame (packets'
    # `ts`, written exactly at the capture's precision)
    stamps = [
        {
            p["frame"]: int(p["ts"] * 10**9)
            for p in (
                json.loads(line, parse_float=Decimal)
                for line in tcpwhy("packets", str(cap), "--format", "jsonl").splitlines()
            )
        }
        for cap in (CLIENT, SERVER)
    ]
    for r in doc["rows"]:
        for x in r["at"]:
            assert x["frame"] not in frames[x["point"]]
            frames[x["point"]].add(x["frame"])
            assert x["ts_ns"] == stamps[x["point"]][x["frame"]], x
    assert len(frames[0]) == rec["orig_pkts"] + rec["resp_pkts"]
    assert len(frames[1]) == server_rec["orig_pkts"] + server_rec["resp_pkts"]
    statuses = [(r["direction"], r["status"]) for r in doc["rows"]][-2:]
    assert statuses == [("to_server", "lost"), ("to_client", "injected")]
    assert doc["client"]["final"] == "CLOSED" and doc["server"]["final"] == "ESTABLISHED"


def test_flow_given_server_first_still_draws_the_client_on_the_left() -> None:
    doc = flow_doc(str(SERVER), str(CLIENT), "2")
    assert doc["points"] == [str(CLIENT), str(SERVER)]
    assert doc["client"]["endpoint"].startswith("10.77.1.2:")
    assert doc["rows"][0]["direction"] == "to_server"


def _segments(svg: str) -> list[tuple[float, float, float, float, str]]:
    import re

    out = []
    for g in re.finditer(r'<g class="lad-pkt[^"]*"[^>]*data-status="(\w+)">(.*?)</g>', svg):
        m = re.search(r'<line x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="([\d.]+)"', g[2])
        assert m
        out.append((*map(float, m.groups()), g[1]))  # type: ignore[arg-type]
    return out


def _cross(p: tuple[float, ...], q: tuple[float, ...]) -> bool:
    def side(a: tuple[float, ...], b: tuple[float, ...], c: tuple[float, ...]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    a, b, c, d = p[:2], p[2:4], q[:2], q[2:4]
    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def test_flow_svg_draws_slanted_arrows_that_cross() -> None:
    svg = tcpwhy("flow", str(CLIENT), str(SERVER), "1", "--format", "svg")
    assert svg.startswith("<?xml")
    segs = _segments(svg)
    doc = flow_doc(str(CLIENT), str(SERVER), "1")
    assert len(segs) == len(doc["rows"])
    assert all(y2 > y1 for _, y1, _, y2, _ in segs)  # every arrow slants down: it takes time
    lost = [s for s in segs if s[4] == "lost"]
    inj = [s for s in segs if s[4] == "injected"]
    assert len(lost) == 1 and len(inj) == 1
    # the request lost on the path and the RST injected on it were in flight together
    assert _cross(lost[0][:4], inj[0][:4])
    # the handshake's arrows do not cross one another
    assert not any(_cross(segs[i][:4], segs[j][:4]) for i in range(3) for j in range(i + 1, 3))


def test_flow_text_between_the_two_points() -> None:
    out = tcpwhy("flow", str(CLIENT), str(SERVER), "0")
    assert f"{CLIENT} (client side) and {SERVER} (server side)" in out
    assert "✗ lost" in out and "[TCP Retransmission]" in out
    # each packet's time at its capture point is printed in its column
    assert "0.000000" in out.splitlines()[4]  # the SYN leaves the client side first
    rows = flow_doc(str(CLIENT), str(SERVER), "0")["rows"]
    arrived = [r for r in rows if r["status"] == "both"]
    assert len(arrived) == len(rows) - 1  # one was lost
    assert out.count("▶|") + out.count("|◀") == len(arrived)


def test_flow_json_one_capture() -> None:
    doc = flow_doc(str(CLIENT), "0", "--fold", "0")
    assert doc["points"] == [str(CLIENT)] and doc["delay_ms"] is None
    assert len(doc["rows"]) == 11
    assert [r["status"] for r in doc["rows"]] == ["one_point"] * 11


def test_flow_no_pair_and_missing_stream() -> None:
    one = tcpwhy("flow", "--no-pair", str(CLIENT), str(SERVER), "1")
    assert one == tcpwhy("flow", str(CLIENT), "1")
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "flow", str(CLIENT), str(SERVER), "9"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("tcpwhy: ") and "no TCP stream 9" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_conns_filter_keeps_a_connection_where_it_matches() -> None:
    """The RSTs were injected between the points: only the client side saw them. Given
    either way round, the two reset connections are written once, from the client side."""
    for files in ((CLIENT, SERVER), (SERVER, CLIENT)):
        out = jsonl(
            tcpwhy("conns", *map(str, files), "-Y", "tcp.flags.reset == 1", "--format", "jsonl")
        )
        assert [r["stream"] for r in out] == [1, 2]
        assert all(r["seen_at"] == [str(CLIENT), str(SERVER)] for r in out)
        assert all(r["end"] == "reset by responder" for r in out)


def test_flow_partial_overlap_marks_what_the_other_point_could_not_see(tmp_path: Path) -> None:
    """A server-side capture that stopped half-way: what the client side saw after that is
    seen at one point only, not lost or injected; the ladders agree with analyze's counts."""
    early, late = tmp_path / "server-early.pcap", tmp_path / "server-late.pcap"
    _split_pcap(SERVER, early, late)
    doc = json.loads(tcpwhy("analyze", str(CLIENT), str(early), "--format", "json", status=1))
    (path,) = doc["paths"]
    lost = injected = one = 0
    for stream in range(4):
        d = flow_doc(str(CLIENT), str(early), str(stream))
        end = max(x["rel_s"] for r in d["rows"] for x in r["at"] if x["point"] == 1)
        for r in d["rows"]:
            lost += r["status"] == "lost"
            injected += r["status"] == "injected"
            if r["status"] == "one_point":
                one += 1
                assert [x["point"] for x in r["at"]] == [0] and r["at"][0]["rel_s"] > end
    assert lost == path["a_to_b"]["lost"] + path["b_to_a"]["lost"]
    assert injected == path["only_in_a"] + path["only_in_b"] == 0  # the RSTs came later
    assert one > 0
