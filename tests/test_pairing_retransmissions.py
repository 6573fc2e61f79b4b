"""Retransmissions attributed with both ends captured: was the earlier copy lost on the path,
or did it arrive and the receiving host drop it?

The two ends are made from the lab's real retransmission-timeout recording (a client that
sends the same 34 bytes six times, never acknowledged): the server-side capture is the same
recording with the first `d` copies removed, as a path that lost them would show it. What
is expected follows from that construction alone: `d` resends came after a lost copy, the
others after a copy that arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tcpwhy.lab.record import DATA_DIR
from tests.craft import pcap_records
from tests.test_lab import packets

RTO = DATA_DIR / "retransmission-timeout.pcap"


def records(path: Path) -> tuple[bytes, list[bytes], str]:
    endian, head, out = pcap_records(path.read_bytes())
    return head, out, endian


def resent_copies(path: Path) -> list[int]:
    """Frame indices of the client's data segment sent most often, in order."""
    by: dict[tuple[int, int], list[int]] = {}
    for p in packets(path):
        if p.c2s and p.n > 0:
            by.setdefault((p.seq, p.n), []).append(p.i)
    return max(by.values(), key=len)


def analyze(*files: str) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "analyze", "--format", "json", *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("dropped", [0, 2, 5])
def test_resends_after_a_loss_on_the_path_or_an_arrival(tmp_path: Path, dropped: int) -> None:
    head, recs, _ = records(RTO)
    copies = resent_copies(RTO)
    assert len(recs) == len(packets(RTO)) and len(copies) == 6
    server = tmp_path / "server-side.pcap"
    gone = set(copies[:dropped])
    server.write_bytes(head + b"".join(r for i, r in enumerate(recs) if i not in gone))
    doc = analyze(str(RTO), str(server))
    (path,) = doc["paths"]
    rt = path["a_to_b"]["retransmissions"]
    expected = {
        "total": len(copies) - 1,
        "original_lost_on_path": dropped,
        "original_arrived": len(copies) - 1 - dropped,
    }
    assert rt == expected and path["a_to_b"]["lost"] == dropped
    (f,) = [f for f in doc["findings"] if f["kind"] == "retransmission-timeout"]
    assert f["count"] == 1  # one connection, one finding: not doubled by the second capture
    assert f["facts"]["seen_at"] == [str(RTO), str(server)]
    assert f["facts"]["retransmissions_between_points"] == expected
    words = "lost on the path" if dropped == len(copies) - 1 else "receiving host dropped"
    if dropped in (0, len(copies) - 1):
        assert words in " ".join(f["explanation"].split())


def test_one_capture_has_no_attribution() -> None:
    doc = analyze(str(RTO))
    (f,) = [f for f in doc["findings"] if f["kind"] == "retransmission-timeout"]
    assert "retransmissions_between_points" not in f["facts"]
    assert "Both ends captured" not in f["explanation"]
