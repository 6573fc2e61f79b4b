"""An ICMP error that answers a SYN ends the connect() (Linux fails it at once with the error's
errno), so every view has the client's socket CLOSED after it: the `conns` records, `flow`'s
ladder and JSON, `analyze`'s evidence and the HTML report's ladders. A "too big" error ends
nothing. On the lab's recordings (the real kernel's errors, IPv4 and IPv6) and on every error
type and code of tests/data/icmp/codes.pcap.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tcpwhy.report.flow import build_ladder, ladder_view

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = [
    ROOT / "src/tcpwhy/data/lab/icmp-reject.pcap",
    ROOT / "src/tcpwhy/data/lab/icmp-no-route.pcap",
    ROOT / "tests/data/icmp/codes.pcap",
]


def _run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tcpwhy", *args], capture_output=True, text=True, check=False
    )
    assert out.returncode in (0, 1), out.stderr
    return out.stdout


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in _run("conns", "--format", "jsonl", str(path)).splitlines()]


def _closed(path: Path) -> set[int]:
    """The streams an error answered after their SYN (codes.pcap's last one has its error
    before the SYN it quotes: it ends nothing, the SYN comes later)."""
    out = set()
    for r in _records(path):
        if r["end_code"] == "rejected_by_icmp":
            rows = ladder_view(build_ladder(str(path), r["stream"])).rows
            if not rows[0].label.startswith("ICMP"):
                out.add(r["stream"])
    return out


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_conns_and_flow_close_the_client_at_the_error(path: Path) -> None:
    recs = _records(path)
    rejected = [r for r in recs if r["end_code"] == "rejected_by_icmp"]
    assert rejected
    early = 0
    for r in recs:
        view = ladder_view(build_ladder(str(path), r["stream"]))
        errors = [row for row in view.rows if row.label.startswith("ICMP")]
        if r in rejected and view.rows[0] in errors:
            # an error before the SYN it quotes ends nothing: the SYN is sent after it
            assert r["orig_state"] == view.client_final == "SYN_SENT", r["stream"]
            early += 1
        elif r in rejected:
            assert r["orig_state"] == "CLOSED", r["stream"]
            assert view.client_final == "CLOSED", r["stream"]
            # the state changes at the error's own arrow, after the SYN's SYN_SENT
            assert [row.client for row in errors] == ["CLOSED"], r["stream"]
            assert view.rows[0].client == "SYN_SENT", r["stream"]
        elif r["history"] == "S":  # a SYN answered by "too big" only: still trying
            assert r["orig_state"] == "SYN_SENT", r["stream"]
            assert view.client_final == "SYN_SENT", r["stream"]
            assert errors and all(row.client == "" for row in errors), r["stream"]
    assert early == (path.name == "codes.pcap")


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_analyze_evidence_and_html_ladders_agree(path: Path, tmp_path: Path) -> None:
    closed = _closed(path)
    report = json.loads(_run("analyze", "--format", "json", str(path)))
    seen = 0
    for f in report["findings"]:
        for step in f["timeline"]:
            if step["stream"] in closed and step["packet"].startswith("ICMP"):
                assert step["client_state"] == "CLOSED", (f["kind"], step)
                seen += 1
            elif step["stream"] in closed and step["packet"].startswith("[SYN]"):
                assert step["client_state"] == "SYN_SENT", (f["kind"], step)
    assert seen
    html = tmp_path / "report.html"
    _run("analyze", "--format", "html", "-o", str(html), str(path))
    text = html.read_text()
    at = text.index('"ladders":') + len('"ladders":')
    ladders, _ = json.JSONDecoder().raw_decode(text[at:])
    drawn = [int(k.split(":")[1]) for k in ladders if int(k.split(":")[1]) in closed]
    assert drawn
    for sid in drawn:
        _client, _server, _c0, _s0, client_final, _sf, rows = ladders[f"0:{sid}"]
        assert client_final == "CLOSED", sid
        assert any(row[4].startswith("ICMP") and row[5] == "CLOSED" for row in rows), sid
