"""`tcpwhy explain`: error messages map back to the wire events that produce them."""

from __future__ import annotations

import json

import pytest

from tcpwhy.diagnose.explain import explain
from tcpwhy.diagnose.registry import load
from tests.test_diagnose import main


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("BrokenPipeError: [Errno 32] Broken pipe", "stale-keepalive-reuse"),
        ("org.apache.http.NoHttpResponseException: api:443 failed to respond", "keepalive-race"),
        ('Get "http://x/": EOF', "stale-keepalive-reuse"),
        ("Error: socket hang up", "half-open-reset"),
        ("java.net.SocketException: Connection reset", "abortive-close"),
        ("dial tcp 10.0.0.1:80: connect: connection refused", "connection-refused"),
        ("dial tcp 10.0.0.1:80: i/o timeout", "syn-timeout"),
        ("connect EADDRNOTAVAIL", "time-wait-accumulation"),
        ("accept: Too many open files", "close-wait-leak"),
    ],
)
def test_message_lists_the_pattern(message: str, kind: str) -> None:
    kinds = {k for m in explain(message) for k, _ in m.kinds}
    assert kind in kinds


def test_every_listed_kind_exists() -> None:
    from tcpwhy.diagnose.explain import MEANINGS

    known = set(load())
    assert {k for m in MEANINGS for k, _ in m.kinds} <= known


def test_cli_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "Broken", "pipe"]) == 0
    out = capsys.readouterr().out
    assert "stale-keepalive-reuse" in out and "tcpdump" in out
    assert main(["explain", "--format", "json", "ECONNRESET"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in doc["meanings"]] == ["RST on an established connection (ECONNRESET)"]
    assert [k["kind"] for k in doc["meanings"][0]["kinds"]] == [
        "keepalive-race",
        "half-open-reset",
        "abortive-close",
        "middlebox-reset",
        "accept-queue-overflow",
        "fin-wait-2-stall",
    ]
    assert main(["explain", "all good here"]) == 1


@pytest.mark.parametrize(
    "message",
    [
        "OSError: [Errno 98] Address already in use",
        "listen tcp :8080: bind: address already in use",
        "java.net.BindException: Address already in use",
        "Error: listen EADDRINUSE: address already in use :::8080",
        "bind() to 0.0.0.0:80 failed (98: Address already in use)",
    ],
)
def test_address_in_use_forms(message: str) -> None:
    """Every runtime's wording finds the EADDRINUSE meaning, and only it."""
    assert [m.name for m in explain(message)] == ["the local port is taken (EADDRINUSE)"]


def test_address_in_use_text_names_causes_and_fixes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "EADDRINUSE"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for part in ("TIME_WAIT", "SO_REUSEADDR", "SO_REUSEPORT", "ip_local_reserved_ports",
                 "ss -ltnp 'sport = :PORT'", "No capture shows it", "setReuseAddress(true)"):  # fmt: skip
        assert part in out, part
    assert "Patterns that produce it" not in out  # bind() sends no packet: no finding kind


def test_cannot_assign_stays_apart_from_in_use() -> None:
    (m,) = explain("OSError: [Errno 99] Cannot assign requested address")
    assert m.name == "no free local port (EADDRNOTAVAIL)"
    assert "ip_local_reserved_ports" in " ".join(m.host)
