"""`-Y FILTER` on the views: packets shows the matching packets, conns the connections with a
matching packet, flow the matching arrows with the rest folded. Expected frames are tshark's
(tests/data/filters/expected.json); only filters without a documented difference are used."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcpwhy.capture import read_table
from tcpwhy.cli import main
from tcpwhy.decode.table import CaptureStats
from tcpwhy.filter import compile_filter
from tcpwhy.report.flow import build_ladder, render
from tcpwhy.report.packets import iter_rows
from tcpwhy.tcp.streams import StreamTracker
from tests.test_filter_tshark import DOCUMENTED

HERE = Path(__file__).parent
EXPECTED = json.loads((HERE / "data" / "filters" / "expected.json").read_text())
FILTERS = [
    "tcp.flags.syn or tcp.flags.fin == 1",
    "(tcp.srcport == 80 or tcp.dstport == 80) and tcp.len > 0",
    "tcp.analysis.retransmission",
    "tcp.analysis.duplicate_ack",
    "ip.addr == 10.0.0.0/8",
    "tcp.stream in {0, 2}",
    "tcp.flags & 0x12 == 0x12",
    "tcp.dstport >= 4 * {tcp.srcport + 3}",
]


def _capture(name: str, zeek: Path) -> Path:
    kind, _, file = name.partition("/")
    if kind == "zeek":
        return zeek / file
    root = HERE.parent / "src" / "tcpwhy" / "data"
    return root / file if (root / file).exists() else root / "lab" / file


def _cases(zeek: Path) -> list[tuple[str, Path, list[int]]]:
    out = []
    by_text = {f["filter"]: f for f in EXPECTED["filters"] if "frames" in f}
    for text in FILTERS:
        if text not in by_text:
            continue
        for name, frames in by_text[text]["frames"].items():
            if (text, name) in DOCUMENTED:
                continue
            out.append((text, _capture(name, zeek), frames))
    return out


def test_packets_y_selects_tsharks_frames(zeek_corpus: Path) -> None:
    cases = _cases(zeek_corpus)
    # each filter on each capture of expected.json
    assert len(cases) == len(FILTERS) * len(EXPECTED["tcp_frames"])
    for text, cap, frames in cases:
        flt = compile_filter(text)
        got = [r.frame for r in iter_rows(str(cap), CaptureStats(), flt=flt)]
        assert got == frames, (text, cap.name)


def test_conns_y_keeps_connections_with_a_matching_packet(
    zeek_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every case, through the command line parser (in this process: 120 runs)."""
    for text, cap, frames in _cases(zeek_corpus):
        t = read_table(str(cap))
        stream = StreamTracker().feed(t)["stream"]
        want = sorted(set(stream[np.isin(t["frame"], frames)].tolist()))
        assert main(["conns", str(cap), "-Y", text, "--format", "jsonl"]) == 0
        out = capsys.readouterr().out
        got = sorted({json.loads(line)["stream"] for line in out.splitlines()})
        assert got == want, (text, cap.name)


@pytest.mark.parametrize("text", ["tcp.flags.fin == 1 or tcp.flags.syn == 1"])
def test_flow_y_folds_what_does_not_match(zeek_corpus: Path, text: str) -> None:
    buf = io.StringIO()
    render(build_ladder(str(zeek_corpus / "ftp-gridftp.pcap"), 0, flt=compile_filter(text)), buf)
    lines = buf.getvalue().splitlines()
    arrows = [line for line in lines if "▶|" in line or "|◀" in line]
    assert len(arrows) == 4  # SYN, SYN-ACK, and the two FINs of stream 0
    assert any("packets not matching the filter" in line for line in lines)


def test_bad_filter_is_reported_like_tshark(tmp_path: Path) -> None:
    cap = HERE.parent / "src" / "tcpwhy" / "data" / "demo-stale-keepalive.pcap"
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "packets", str(cap), "-Y", "tcp.prot == 1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        'tcpwhy: -Y: Left side of "==" expression must be a field or function, not tcp.prot.',
        "    tcp.prot == 1",
        "    ^~~~~~~~",
    ]
