"""`tcpwhy demo`: the stale keep-alive incident recorded on this kernel (as root; else the
recording shipped in the package), its diagnosis, and the same as one HTML page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_diagnoses_the_incident(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where the HTML page goes
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    live = "recorded the stale-keepalive lab scenario just now on this kernel"
    shipped = "using the recording shipped in the package"
    assert lines[0].startswith("# tcpwhy demo: ")
    assert (live in lines[0]) if os.geteuid() == 0 else (shipped in lines[0]), lines[0]
    assert lines[1] == "# tcpwhy analyze stale-keepalive.pcap"
    assert any(line.startswith("Verdict: stale-keepalive-reuse — ") for line in lines)
    page = tmp_path / "tcpwhy-demo.html"
    assert lines[-1] == f"# the same diagnosis as one page for an incident ticket: {page}"
    assert "stale-keepalive-reuse" in page.read_text(encoding="utf-8")
