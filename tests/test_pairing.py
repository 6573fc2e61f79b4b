"""Two captures of one path, paired: the shipped recording made at both ends of a 60 ms path
through a middlebox that forgets idle flows, and a fresh run on the kernel (root).

The reference is the relay's own log (what it delayed, dropped and injected) and a plain
multiset comparison of the two captures' packets, independent of the pairing code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.diagnose.context import Capture
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.pairing import match_streams, pair_captures, signatures
from tcpwhy.lab.env import Options
from tcpwhy.lab.record import DATA_DIR
from tcpwhy.lab.runner import run_scenario
from tcpwhy.lab.scenarios_pair import server_capture_path
from tests.test_lab import RST, packets

NAME = "middlebox-idle-reset-path"
CLIENT = DATA_DIR / f"{NAME}.pcap"
SERVER = Path(server_capture_path(str(CLIENT)))
DELAY_MS = 30.0


def plain_counts(a: Path, b: Path) -> tuple[int, int, int]:
    """(sent by the client at A, never at B; sent by the server at B, never at A; seen at A
    from the server, never sent at B), by multiset difference of each packet's direction,
    client port, seq, ack, flags and length (no port rewriting in the lab)."""

    def bag(path: Path, c2s: bool) -> Counter[tuple[int, ...]]:
        return Counter(
            (p.cport, p.seq, p.ack if p.flags & 16 else 0, p.flags & 0x17, p.n)
            for p in packets(path)
            if p.c2s == c2s
        )

    lost_ab = sum((bag(a, True) - bag(b, True)).values())
    lost_ba = sum((bag(b, False) - bag(a, False)).values())
    injected = sum((bag(a, False) - bag(b, False)).values())
    return lost_ab, lost_ba, injected


def plain_delays(a: Path, b: Path) -> dict[str, float]:
    """Median one-way delay (ms) each way, read off the two captures' own time stamps (one
    clock in the lab): each segment seen at both points, the k-th copy from the last at one
    matched with the k-th from the last at the other, as a plain dictionary lookup."""
    from statistics import median

    def times(path: Path) -> dict[tuple[int, ...], list[int]]:
        t = read_table(str(path))
        out: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(t)):
            sp, dp, fl = int(t.sport[i]), int(t.dport[i]), int(t.flags[i])
            c2s = dp == 8080
            key = (c2s, sp if c2s else dp, int(t.seq[i]), int(t.ack[i]) if fl & 16 else 0,
                   fl & 0x17, int(t.payload_len[i]))  # fmt: skip
            out.setdefault(key, []).append(int(t.ts_ns[i]))
        return out

    ta, tb = times(a), times(b)
    gaps: dict[bool, list[float]] = {True: [], False: []}
    for key in ta.keys() & tb.keys():
        for x, y in zip(reversed(ta[key]), reversed(tb[key]), strict=False):
            gaps[key[0]].append((y - x if key[0] else x - y) / 1e6)
    return {"a_to_b": median(gaps[True]), "b_to_a": median(gaps[False])}


def check_pair(
    report_json: dict, a: Path, b: Path, dropped: int, injected: int, busy_ms: float = 0.0
) -> None:
    """The pairing's facts against the relay's (30 ms each way, its counts) and against the
    captures' own time stamps. `busy_ms`: how much later than asked a relay on a loaded
    machine may forward (its Python loop waits for the interpreter lock and the scheduler);
    the captures then show the real delay, which the pairing must report."""
    (path,) = report_json["paths"]
    assert path["captures"] == [str(a), str(b)]
    assert path["matched_connections"] == 4
    plain = plain_delays(a, b)
    for d in ("a_to_b", "b_to_a"):
        assert abs(path[d]["delay_ms"] - plain[d]) < 1, (path, plain)
        # never faster than the relay holds a segment; within a few ms of it when quiet
        assert DELAY_MS - 1 < path[d]["delay_ms"] < DELAY_MS + 3 + busy_ms, (path, plain)
    assert path["a_to_b"]["lost"] == dropped and path["b_to_a"]["lost"] == 0
    assert path["only_in_a"] == injected and path["only_in_b"] == 0
    assert (path["a_to_b"]["lost"], path["b_to_a"]["lost"], path["only_in_a"]) == plain_counts(a, b)
    rt = path["a_to_b"]["retransmissions"]
    assert rt == {"total": 1, "original_lost_on_path": 1, "original_arrived": 0}
    assert abs(path["clock_offset_ms"]) < 1.0, "one clock in the lab"
    assert report_json["capture"]["connections"] == 4
    (f,) = report_json["findings"]
    assert (f["kind"], f["count"], f["facts"]["certainty"]) == ("middlebox-reset", 2, "certain")
    assert f["facts"]["seen_at"] == [str(a), str(b)]
    # the evidence of the second capture: the server never sent the RST, and the request it
    # answers never reached the server either
    words = " ".join(f["explanation"].split())
    assert f"the capture at {b} holds this connection, and the server never sent this RST" in words
    assert f"The segment it answers never reached {b} either" in words
    assert [s["note"].endswith(f"never reached {b}") for s in f["timeline"]][:1] == [True]
    # and the server capture's side: after the client's rows, that capture's last packet of
    # the connection before the RST reached the client (its own frame and file), no RST there
    rst = next(s for s in f["timeline"] if s["packet"].startswith("[RST]"))
    assert rst["file"] == str(a)
    port = packets(a)[rst["frame"] - 1].cport
    ts_b = read_table(str(b)).ts_ns
    last = max(p.i for p in packets(b) if p.cport == port and int(ts_b[p.i]) <= rst["ts_ns"])
    far = [s for s in f["timeline"] if s["file"] == str(b)]
    assert [s["frame"] for s in far] == [last + 1], f["timeline"]
    assert far[0]["note"].endswith("the server sends no such RST here")
    assert f["timeline"][-1] == far[0]


def analyze_json(*args: str) -> dict:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", "--format", "json", *args],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stderr  # a warning
    return json.loads(out.stdout)


def test_client_side_alone_is_likely_middlebox() -> None:
    report = diagnose_files([str(CLIENT)])
    kinds = [(f.kind, f.count, f.facts.get("certainty")) for f in report.findings]
    assert kinds == [("middlebox-reset", 2, "likely")]
    # the RSTs come half a round trip after the request: independent of the rule's text
    for c in (1, 2):
        conn = [
            p for p in packets(CLIENT) if p.cport == sorted({q.cport for q in packets(CLIENT)})[c]
        ]
        rtt = conn[1].t - conn[0].t
        assert conn[-1].flags & RST and conn[-1].t - conn[-2].t < 0.6 * rtt


def test_shipped_pair() -> None:
    check_pair(analyze_json(str(CLIENT), str(SERVER)), CLIENT, SERVER, dropped=3, injected=2)


def test_order_given_is_a_then_b() -> None:
    (path,) = analyze_json(str(SERVER), str(CLIENT))["paths"]
    assert path["captures"] == [str(SERVER), str(CLIENT)]
    assert path["b_to_a"]["lost"] == 3 and path["only_in_b"] == 2 and path["only_in_a"] == 0


def test_no_pair_keeps_the_points_apart() -> None:
    d = analyze_json("--no-pair", str(CLIENT), str(SERVER))
    assert "paths" not in d and d["capture"]["connections"] == 8
    assert [(f["kind"], f["facts"]["certainty"]) for f in d["findings"]] == [
        ("middlebox-reset", "likely")
    ]


def test_text_report_has_a_path_section() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", str(CLIENT), str(SERVER)],
        capture_output=True,
        text=True,
    ).stdout
    out = " ".join(out.split())  # the report wraps lines to the terminal's width
    assert "Path between the capture points" in out
    assert re.search(r"one-way delay 3\d\.\d ms, 3 lost on the path", out)
    assert "injected on the path: 2 seen only at" in out


def _capture(path: Path, shift_ns: int = 0, nat: bool = False) -> Capture:
    t = read_table(str(path))
    if shift_ns:
        t.cols["ts_ns"] = t.cols["ts_ns"] + shift_ns
    if nat:  # a NAT between the points: the client's port and address are rewritten
        to_server = t.cols["dport"] == 8080
        t.cols["sport"] = np.where(to_server, t.cols["sport"] + 7, t.cols["sport"])
        t.cols["dport"] = np.where(~to_server, t.cols["dport"] + 7, t.cols["dport"])
        t.cols["src_lo"] = np.where(to_server, t.cols["src_lo"] + 1, t.cols["src_lo"])
        t.cols["dst_lo"] = np.where(~to_server, t.cols["dst_lo"] + 1, t.cols["dst_lo"])
    return Capture(t, np.zeros(len(t), np.int16), [str(path)])


def test_pairs_across_nat_and_clock_offset() -> None:
    a = _capture(CLIENT)
    b = _capture(SERVER, shift_ns=5_000_000_000, nat=True)
    sa, sb = match_streams(signatures(a), signatures(b))
    assert len(sa) == 4 and sorted(sa.tolist()) == sorted(sb.tolist())
    (p,) = pair_captures([a, b], ["a", "b"])
    assert abs(p.clock_offset_ms - 5000) < 1  # type: ignore[operator]
    for d in (p.a_to_b, p.b_to_a):
        assert d.delay_ms is not None and abs(d.delay_ms - DELAY_MS) < 3
    assert (p.a_to_b.lost, p.only_in_a, p.only_in_b) == (3, 2, 0)


def test_partial_overlap_counts_nothing_outside() -> None:
    """A server-side capture that stopped early: the segments sent after its end are not lost."""
    a = _capture(CLIENT)
    t = read_table(str(SERVER))
    keep = t.cols["ts_ns"] < np.sort(t.cols["ts_ns"])[len(t) // 2]
    t2 = t.take(keep)
    b = Capture(t2, np.zeros(len(t2), np.int16), ["b"])
    (p,) = pair_captures([a, b], ["a", "b"])
    assert p.a_to_b.lost == 1  # only the loss before the reset connections' idle time
    assert p.only_in_a == 0


@pytest.mark.root
def test_pair_on_the_kernel(netns_ok: None, tmp_path: Path) -> None:
    out = tmp_path / f"{NAME}.pcap"
    result = run_scenario(NAME, Options(), str(out))
    assert result.ok, f"{result.reason}\n{result.story}"
    line = next(e.text for e in result.events if e.text.startswith("counts:"))
    counts = dict(kv.split("=") for kv in line.split()[1:])
    check_pair(
        analyze_json(str(out), server_capture_path(str(out))),
        out,
        Path(server_capture_path(str(out))),
        dropped=int(counts["dropped"]),
        injected=int(counts["injected"]),
        busy_ms=15.0,
    )


def test_a_second_point_doubles_no_finding(tmp_path: Path) -> None:
    """Every lab recording given with a copy of itself as a second capture point (a path with
    no delay, nothing lost): every connection pairs, and the findings are the recording's
    own, each once, seen at both points."""
    import shutil

    for src in sorted(DATA_DIR.glob("*.pcap")):
        if src.name.endswith(".server.pcap"):
            continue
        copy = tmp_path / f"{src.stem}.other-point.pcap"
        shutil.copy(src, copy)
        one = diagnose_files([str(src)])
        two = diagnose_files([str(src), str(copy)])
        assert [(f.kind, f.count, f.streams) for f in two.findings] == [
            (f.kind, f.count, f.streams) for f in one.findings
        ], src.name
        for f in two.findings:
            assert f.facts["seen_at"] == [str(src), str(copy)], (src.name, f.kind)
        (p,) = two.paths
        assert p["matched_connections"] == one.capture.connections == two.capture.connections
        got = (p["a_to_b"]["lost"], p["b_to_a"]["lost"], p["only_in_a"], p["only_in_b"])
        assert got == (0, 0, 0, 0), src.name
