"""The packet view against tshark: the Info column, relative numbers, stream and analysis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tcpwhy.decode.table import CaptureStats
from tcpwhy.report.packets import iter_rows
from tests.tshark_ref import DATA, PACKAGE_DATA, corpus_pairs, rows


def _info_pairs() -> list[tuple[Path, Path]]:
    out = []
    for tsv in sorted(DATA.glob("*.info.tsv")):
        name = tsv.name.removesuffix(".info.tsv")
        cap = PACKAGE_DATA / name if (PACKAGE_DATA / name).exists() else PACKAGE_DATA / "lab" / name
        out.append((cap, tsv))
    return out


def test_info_column_matches_tshark() -> None:
    pairs = _info_pairs()
    # 32 lab recordings (5 over TLS, 2 at both ends of a path, 4 ICMP/MTU) and the demo
    assert len(pairs) == 33
    compared = 0
    for cap, tsv in pairs:
        want = dict(line.rstrip("\n").split("\t", 1) for line in tsv.open() if line.strip())
        got = {str(r.frame): r.info for r in iter_rows(str(cap), CaptureStats())}
        assert set(got) == set(want), cap.name
        for frame, info in want.items():
            assert got[frame] == info, f"{cap.name} frame {frame}"
            compared += 1
    assert compared == 1281


def test_view_fields_match_tshark_on_the_corpus(zeek_corpus: Path) -> None:
    checked = 0
    missing: dict[str, int] = {}
    for cap, tsv in corpus_pairs(zeek_corpus):
        by_frame = {r.frame: r for r in iter_rows(str(cap), CaptureStats())}
        for want in rows(tsv):
            r = by_frame.get(int(want["frame.number"]))
            if r is None:
                missing[cap.name] = missing.get(cap.name, 0) + 1
                continue
            assert r.stream == int(want["tcp.stream"])
            assert r.seq == int(want["tcp.seq"])
            assert r.ack == int(want["tcp.ack"])  # tshark shows 0 without the ACK flag, as we do
            assert r.len == int(want["tcp.len"])
            assert r.win == int(want["tcp.window_size"])
            assert abs(r.time - float(want["frame.time_relative"])) < 1e-6
            checked += 1
    # including the 42 frames tshark decodes after IP reassembly (the GTP trace)
    assert missing == {}
    assert checked == 15268


def test_jsonl_and_absolute(zeek_corpus: Path) -> None:
    cap = zeek_corpus / "ftp-gridftp.pcap"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcpwhy",
            "packets",
            str(cap),
            "--format",
            "jsonl",
            "--absolute",
            "-c",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objs = [json.loads(x) for x in out.splitlines()]
    assert len(objs) == 3
    want = rows(zeek_corpus / "tshark" / "ftp-gridftp.pcap.tshark.tsv")[:3]
    for o, w in zip(objs, want, strict=True):
        assert {
            "frame",
            "time",
            "src",
            "dst",
            "sport",
            "dport",
            "flags",
            "seq",
            "ack",
            "len",
            "win",
            "info",
            "stream",
            "analysis",
        } <= set(o)
        assert o["seq"] == int(w["tcp.seq_raw"])
    assert objs[0]["flags"] == ["SYN"] and objs[1]["flags"] == ["SYN", "ACK"]
