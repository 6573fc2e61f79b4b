"""Scenarios recorded now, with other parameters than the shipped recordings (IPv6, other
ports, other timeouts), must still yield their finding kind. Root and namespaces needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcpwhy.diagnose.engine import diagnose_files
from tcpwhy.diagnose.model import Severity
from tcpwhy.lab.env import Options
from tcpwhy.lab.record import DATA_DIR
from tcpwhy.lab.runner import get, run_scenario
from tests.gates import LIVE_SLACK_S

pytestmark = pytest.mark.root

CASES = [  # (scenario, options): the finding kind is the one the scenario declares
    ("stale-keepalive", Options(ipv6=True, port=9090, idle=0.5)),
    ("stale-keepalive", Options(port=18080, idle=2.0)),
    ("keepalive-race", Options(ipv6=True, port=8443)),
    ("close-wait-leak", Options(ipv6=True, port=9191, count=5)),
    ("fin-wait-2", Options(ipv6=True, timeout=1.0)),
    ("syn-timeout", Options(ipv6=True, port=7070)),
    ("accept-queue-overflow", Options(ipv6=True, port=9300)),
    ("half-open", Options(ipv6=True, port=6060)),
    ("retransmission-timeout", Options(ipv6=True, timeout=2.0)),
    ("abortive-close", Options(ipv6=True, port=5050)),
    ("time-wait-reuse", Options(ipv6=True, port=9443, delay=1.0)),
    ("middlebox-reset", Options(ipv6=True, port=7443, timeout=1.0, idle=1.5)),
    ("middlebox-reset", Options(port=6443, count=4)),
    ("clean", Options(ipv6=True, port=8088)),
    ("stale-keepalive-tls", Options(ipv6=True, port=9445, idle=0.5)),
    ("keepalive-race-tls", Options(port=9446)),
    ("clean-tls", Options(ipv6=True, port=9447)),
    ("tls-fatal-alert", Options(ipv6=True, port=9448)),
    ("tls-truncation", Options(ipv6=True, port=9449, idle=0.6)),
    ("addr-in-use-restart", Options(ipv6=True, port=9444, count=6)),
    ("ephemeral-overlap", Options(port=7080)),
    ("icmp-reject", Options(ipv6=True, port=9500)),
    ("icmp-no-route", Options(port=9510)),
    ("pmtu-black-hole", Options(ipv6=True, port=9520)),
    ("pmtu-discovery", Options(ipv6=True, port=9530)),
]


def _only_info(path: Path) -> bool:
    return all(f.severity is Severity.INFO for f in diagnose_files([str(path)]).findings)


@pytest.mark.parametrize(
    ("scenario", "opts"),
    CASES,
    ids=[f"{s}-{'v6' if o.ipv6 else 'v4'}-{o.port}" for s, o in CASES],
)
def test_recorded_now(netns_ok: None, tmp_path: Path, scenario: str, opts: Options) -> None:
    kind = get(scenario).finds
    out = tmp_path / f"{scenario}.pcap"
    res = run_scenario(scenario, opts, out=str(out))
    assert res.ok, res.reason
    report = diagnose_files([str(out)])
    got = {f.kind for f in report.findings}
    if kind is not None:
        assert kind in got
    # a scenario whose shipped recording has nothing above info has nothing above info now
    if _only_info(DATA_DIR / f"{scenario}.pcap"):
        assert all(f.severity is Severity.INFO for f in report.findings), got
    if kind is not None:
        f = next(f for f in report.findings if f.kind == kind)
        # the server's address, after its name when the connections name it (TLS SNI)
        assert f.facts.get("server", "").removesuffix(")").endswith(f":{opts.port}") or kind in (
            "close-wait-leak",
            "fin-wait-2-stall",
        )
    if scenario == "time-wait-reuse":
        f = next(f for f in report.findings if f.kind == kind)
        assert f.count == 3 and f.facts["not_accepted"] == 0 and f.severity is Severity.INFO
    if scenario == "middlebox-reset":
        f = next(f for f in report.findings if f.kind == kind)
        assert "IP TTL is 64" in f.explanation
    if scenario.startswith("stale-keepalive") and opts.idle is not None:
        f = next(f for f in report.findings if f.kind == "stale-keepalive-reuse")
        median = f.facts["server_idle_timeout_s"]["median"]
        # the server's idle timer never fires early; late by at most the live slack
        assert opts.idle - 0.05 <= median <= opts.idle + LIVE_SLACK_S, median
