"""Diagnosis on the lab recordings shipped in the package (details beyond the pinned findings),
and the command's output contract."""

from __future__ import annotations

import argparse
import io
import json
from importlib import resources
from pathlib import Path

import pytest

from tcpwhy.diagnose import http
from tcpwhy.diagnose.cli import register
from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import Severity
from tcpwhy.diagnose.render import write_text
from tcpwhy.errors import TcpwhyError

LAB = Path(str(resources.files("tcpwhy") / "data" / "lab"))


def main(argv: list[str]) -> int:
    """The analyze/explain commands as `tcpwhy` runs them (parser, exit status on errors)."""
    parser = argparse.ArgumentParser(prog="tcpwhy")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TcpwhyError as exc:
        return exc.exit_status


def kinds(path: Path | str) -> dict[str, Severity]:
    return {f.kind: f.severity for f in diagnose_files([str(path)]).findings}


# which findings each recording yields, exactly, is pinned in test_diagnose_pinned.py


def test_clean_traffic_exits_zero() -> None:
    report = diagnose_files([str(LAB / "clean.pcap")])
    assert report.exit_status() == 0
    assert report.endings == {"closed (FIN both ways)": 2}


def test_stale_keepalive_measures_the_server_idle_timeout() -> None:
    (f,) = [
        f
        for f in diagnose_files([str(LAB / "stale-keepalive.pcap")]).findings
        if f.kind == "stale-keepalive-reuse"
    ]
    # the lab server's idle timeout is 1 s; the measured gap must be close to it
    assert 0.95 <= f.facts["server_idle_timeout_s"]["median"] <= 1.1
    assert "GET /second" in f.summary
    assert [s.note for s in f.timeline][-1].startswith("server kernel answers with RST")
    states = {(s.frame, s.client_state) for s in f.timeline}
    assert (10, "CLOSE_WAIT") in states  # the client wrote from CLOSE_WAIT
    assert any("Broken pipe" in e for e in f.errors)
    assert any("IdleConnTimeout" in x for x in f.fixes)


def test_race_and_stale_are_told_apart_by_ack_numbers() -> None:
    race = kinds(LAB / "keepalive-race.pcap")
    stale = kinds(LAB / "stale-keepalive.pcap")
    assert "keepalive-race" in race and "stale-keepalive-reuse" not in race
    assert "stale-keepalive-reuse" in stale and "keepalive-race" not in stale


def test_retry_is_matched_by_payload() -> None:
    f = next(
        f
        for f in diagnose_files([str(LAB / "stale-keepalive.pcap")]).findings
        if f.kind == "request-retried"
    )
    assert f.facts["server"] == "10.77.0.2:8080"
    assert "200 OK" in f.summary


def test_abortive_close_tells_unread_data_from_linger() -> None:
    fs = [f for f in diagnose_files([str(LAB / "abortive-close.pcap")]).findings]
    assert sorted(f.facts["cause"] for f in fs if f.kind == "abortive-close") == [
        "linger",
        "unread",
    ]


def test_syn_timeout_reports_the_ladder() -> None:
    f = next(f for f in diagnose_files([str(LAB / "syn-timeout.pcap")]).findings)
    ladder = f.facts["retry_ladder_s"]
    assert ladder[0] == 0 and 0.9 < ladder[1] < 1.2 and 2.8 < ladder[2] < 3.3


def test_syn_timeout_says_retried_only_when_the_client_retried(tcpdump_corpus: Path) -> None:
    """One SYN seen (tcpdump's IP-over-InfiniBand capture: connects to closed ports, the
    capture holding the client's packets only) is not told as a retry; the lab's ladder is."""
    f = next(f for f in diagnose_files([str(tcpdump_corpus / "ipoib.pcap")]).findings)
    assert f.kind == "syn-timeout" and f.facts["retry_ladder_s"] == [0]
    assert "192.168.56.24:8: one SYN, no retransmission seen yet." in f.explanation
    assert "retried" not in f.explanation
    f = next(f for f in diagnose_files([str(LAB / "syn-timeout.pcap")]).findings)
    assert "10.77.0.2:8080 and retried: sent at +0, +1" in f.explanation.replace("\n", " ")


def test_time_wait_reuse_accepted_is_only_a_note() -> None:
    report = diagnose_files([str(LAB / "time-wait-reuse.pcap")])
    (f,) = report.findings
    assert f.kind == "time-wait-reuse" and f.severity is Severity.INFO
    # server TIME-WAIT (bind), client TIME-WAIT (bind), client TIME-WAIT (tcp_tw_reuse)
    assert f.count == 3 and f.streams == [1, 2, 4]
    assert f.facts == {"server": "10.77.0.2:8080", "not_accepted": 0}
    assert [s.note for s in f.timeline][-1] == "server accepts the new connection (SYN-ACK)"
    assert report.exit_status() == 0
    assert report.endings == {"closed (FIN both ways)": 5}


def test_middlebox_reset_is_told_by_its_ttl() -> None:
    report = diagnose_files([str(LAB / "middlebox-reset.pcap")])
    assert [f.kind for f in report.findings] == ["middlebox-reset"]
    (f,) = report.findings
    assert f.severity is Severity.WARNING and f.facts["server"] == "10.77.2.2:8080"
    # the firewall's RST left the middle namespace with TTL 64; the server's packets
    # crossed the router (two forwarding passes in the relay topology)
    assert "its IP TTL is 64, every other packet from the server has 62" in f.explanation
    notes = [s.note for s in f.timeline]
    assert notes[0] == "client segment the RST answers"
    assert notes[-1].startswith("RST 'from the server'")
    assert any("Connection reset by peer" in e for e in f.errors)


def test_rotated_files_are_one_timeline(tmp_path: Path) -> None:
    report = diagnose_files([str(LAB / "refused.pcap"), str(LAB / "syn-timeout.pcap")])
    got = {f.kind for f in report.findings}
    assert {"connection-refused", "syn-timeout"} <= got
    assert len(report.capture.files) == 2


def test_json_output_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", "--format", "json", str(LAB / "stale-keepalive.pcap")])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert doc["capture"]["packets"] == 21 and doc["capture"]["connections"] == 2
    f = doc["findings"][0]
    assert f["kind"] == "stale-keepalive-reuse" and f["severity"] == "error"
    for key in (
        "summary",
        "streams",
        "frames",
        "timeline",
        "explanation",
        "causes",
        "fixes",
        "errors",
    ):
        assert f[key]
    assert doc["connections"] == {"reset by server": 1, "closed (FIN both ways)": 1}


def test_clean_exit_zero_and_bad_file_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", str(LAB / "clean.pcap")]) == 0
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    assert main(["analyze", str(bad)]) == 2


def test_text_output_is_plain_when_not_a_terminal() -> None:
    buf = io.StringIO()
    write_text(diagnose_files([str(LAB / "stale-keepalive.pcap")]), buf)
    text = buf.getvalue()
    assert "\x1b[" not in text
    assert text.splitlines()[1].startswith("Verdict: stale-keepalive-reuse")
    assert "What to change" in text and "keepalive_timeout" in text
    assert not any(line.endswith(" ") for line in text.splitlines())


def test_payload_text_is_escaped() -> None:
    assert http.printable(b"GET /\x1b[31mred\\ HTTP") == "GET /\\x1b[31mred\\\\ HTTP"
    msg = http.parse_start(
        b"POST /p\x1b HTTP/1.1\r\nConnection: close\r\nKeep-Alive: timeout=5\r\n\r\n"
    )
    assert msg is not None and msg.target == "/p\\x1b"  # control bytes come out escaped
    assert msg.connection == "close"
    msg = http.parse_start(
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"
    )
    assert msg is not None and msg.status == 200 and msg.keep_alive_timeout == 5
    assert msg.connection == "keep-alive"


def test_findings_read_as_written() -> None:
    """Counts, ranges, addresses and times in the findings' words, as a person reads them:
    a singular for one, one figure for a range of equal ones, a projection that exceeds the
    ports said so, an IPv6 address without port unbracketed, wall-clock times (not epoch
    seconds), no stray spaces."""
    texts: dict[str, list[str]] = {}
    for path in sorted(LAB.glob("*.pcap")):
        for f in diagnose_files([str(path)]).findings:
            assert f.explanation == f.explanation.strip(), (path.name, f.kind)
            assert "  " not in f.summary + f.explanation.replace("\n\n", " "), (path.name, f.kind)
            texts.setdefault(f.kind, []).append(f.summary + "\n" + f.explanation)
    assert any("; 1 late FIN answered by RST" in t for t in texts["fin-wait-2-stall"])
    assert any("(CLOSE_WAIT for 43.0 ms each as seen here)" in t for t in texts["close-wait-leak"])
    (tw,) = texts["time-wait-accumulation"]
    assert "about 1,298 per second" in tw
    assert "would need about 77,852 TIME_WAIT sockets" in tw
    assert "more than the 28,232 ephemeral ports of the default range" in tw
    icmp = "\n".join(texts["icmp-unreachable"])
    assert "fd00:77:1::1 is not the destination (fd00:77:2::2)" in icmp
    assert "[fd00:77:2::2])" not in icmp
    (flood,) = texts["syn-flood"]
    assert "From 20:50:03.407 to 20:50:04.424 UTC on 2026-12-01 (+0.000 s to +1.017 s into" in (
        flood.replace("\n", " ")
    )
    assert "option that their SYNs offered" in flood
