"""`analyze -Y`: only connections with a matching packet are diagnosed, each whole, and findings
name them by the capture's own tcp.stream numbers."""

from __future__ import annotations

from pathlib import Path

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.filter import compile_filter

LAB = Path(__file__).resolve().parents[1] / "src" / "tcpwhy" / "data" / "lab"


def _kinds(path: Path, text: str | None) -> list[tuple[str, list[int]]]:
    flt = compile_filter(text) if text else None
    report = diagnose_files([str(path)], flt=flt)
    return [(f.kind, list(f.streams)) for f in report.findings]


def test_limits_to_matching_connections_and_keeps_stream_numbers() -> None:
    cap = LAB / "close-wait-leak.pcap"
    assert _kinds(cap, None) == [("close-wait-leak", [0, 1, 2])]
    assert _kinds(cap, "tcp.stream == 2") == [("close-wait-leak", [2])]
    assert _kinds(cap, "tcp.stream in {1 2}") == [("close-wait-leak", [1, 2])]


def test_connection_is_analysed_whole() -> None:
    """The filter matches only the request, yet the RST and FIN that make the finding count."""
    cap = LAB / "stale-keepalive.pcap"
    kinds = _kinds(cap, 'tcp.payload contains "GET /second"')
    assert ("stale-keepalive-reuse", [0]) in kinds
    assert _kinds(cap, "tcp.flags.syn == 1 and tcp.stream == 1") == []


def test_no_match_no_finding() -> None:
    assert _kinds(LAB / "refused.pcap", "tcp.port == 1") == []


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr shows the bytes read as a bar; piped, stderr stays quiet."""
    import os
    import subprocess
    import sys

    cap = LAB / "time-wait.pcap"
    cmd = [sys.executable, "-m", "tcpwhy", "analyze", str(cap), "--format", "json"]
    piped = subprocess.run(cmd, capture_output=True, text=True)
    assert (piped.returncode, piped.stderr) == (0, "")  # no findings: exit status 0
    master, slave = os.openpty()
    try:
        r = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "COLUMNS": "100"}
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert r.returncode == 0
    assert "tcpwhy: reading time-wait.pcap" in shown or "tcpwhy: diagnosing" in shown
