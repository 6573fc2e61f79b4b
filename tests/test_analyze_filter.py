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
