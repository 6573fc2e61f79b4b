"""`tcpwhy host … --fail-on LEVEL`: the exit status alerting relies on, against real alerts.

Each test builds a throw-away network namespace, makes the kernel produce the alert (a full
accept queue, handshakes dropped on it, a risky setting) and checks that the view exits 1
at that level and 0 below the threshold or without the alert; the JSON documents carry the
same alerts and validate against the published schemas.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tcpwhy.lab import ns as nsmod
from tests.schema_check import validate

pytestmark = pytest.mark.root
PORT = 8080


class Scene:
    """Namespaces and sockets of one test, removed by the fixture."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sockets: list[socket.socket] = []

    def namespace(self, sysctls: dict[str, object] | None = None) -> str:
        name = nsmod.new_name("failon")
        self.names.append(name)
        nsmod.create_namespace(name)
        nsmod.sysctl(name, sysctls or {})
        return name

    def listener(self, ns: str, backlog: int) -> tuple[str, int]:
        ls = nsmod.socket_in(ns)
        self.sockets.append(ls)
        ls.bind(("127.0.0.1", PORT))  # outside the ephemeral range: no alert of its own
        ls.listen(backlog)
        addr: tuple[str, int] = ls.getsockname()
        return addr

    def connect(self, ns: str, addr: tuple[str, int], n: int, wait: bool = True) -> None:
        """n connections nobody accepts; without `wait` the SYNs are sent and left to retry."""
        for _ in range(n):
            c = nsmod.socket_in(ns)
            self.sockets.append(c)
            if wait:
                c.settimeout(5)
                c.connect(addr)
            else:
                c.setblocking(False)
                c.connect_ex(addr)


@pytest.fixture
def scene(netns_ok: None) -> Iterator[Scene]:
    sc = Scene()
    try:
        yield sc
    finally:
        for s in sc.sockets:
            s.close()
        for name in sc.names:
            nsmod.delete_namespace(name)


def host(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "tcpwhy", "host", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "1000"},
    )
    assert "Traceback" not in res.stderr
    return res


def status(*args: str) -> int:
    return host(*args).returncode


def full_queue(sc: Scene) -> tuple[str, tuple[str, int]]:
    """A listener of backlog 1 holding 2 handshakes: the kernel's queue-full test holds."""
    ns = sc.namespace()
    addr = sc.listener(ns, 1)
    sc.connect(ns, addr, 2)
    return ns, addr


def test_listen_and_states_fail_on_full_accept_queue(scene: Scene) -> None:
    ns, (_, port) = full_queue(scene)
    res = host("listen", "--netns", ns, "--format", "json", "--fail-on", "error")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    validate("host-listen", doc)
    assert [a["level"] for a in doc["alerts"]] == ["error"]
    assert doc["alerts"][0]["subject"] == f"listener 127.0.0.1:{port}"
    assert status("listen", "--netns", ns, "--fail-on", "error") == 1  # table output too
    assert status("listen", "--netns", ns) == 0  # no --fail-on: never 1 for an alert

    res = host("states", "--netns", ns, "--format", "json", "--fail-on", "error")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    validate("host-states", doc)
    full = [a for a in doc["alerts"] if a["kind"] == "accept_queue_full"]
    assert [a["level"] for a in full] == ["error"]
    assert status("states", "--netns", ns, "--by", "port", "--fail-on", "error") == 1


def test_no_alert_below_the_threshold(scene: Scene) -> None:
    ns = scene.namespace()
    addr = scene.listener(ns, 64)
    scene.connect(ns, addr, 2)  # 2 of 64: not filling
    for view in ("listen", "states"):
        res = host(view, "--netns", ns, "--format", "json", "--fail-on", "info")
        assert res.returncode == 0, res.stdout
        doc = json.loads(res.stdout)
        validate(f"host-{view}", doc)
        assert doc["alerts"] == []


def test_listen_filling_is_a_warning(scene: Scene) -> None:
    ns = scene.namespace()
    addr = scene.listener(ns, 5)
    scene.connect(ns, addr, 5)  # 5 of 5 waiting: at the limit, not yet over it
    doc = json.loads(host("listen", "--netns", ns, "--format", "json").stdout)
    assert [(a["level"], a["kind"]) for a in doc["alerts"]] == [("warning", "accept_queue_filling")]
    assert status("listen", "--netns", ns, "--fail-on", "warning") == 1
    assert status("listen", "--netns", ns, "--fail-on", "error") == 0


def test_counters_fail_on_dropped_handshakes(scene: Scene) -> None:
    ns, addr = full_queue(scene)
    quiet = host("counters", "--netns", ns, "--interval", "0.2", "--count", "2",
                 "--format", "json", "--fail-on", "error")  # fmt: skip
    assert quiet.returncode == 0, quiet.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcpwhy", "host", "counters", "--netns", ns, "--interval", "0.5",
         "--count", "8", "--format", "json", "--fail-on", "error"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        scene.connect(ns, addr, 2, wait=False)  # these SYNs meet the full queue, and retry
        rest = [json.loads(line) for line in proc.stdout]
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 1, proc.stderr.read() if proc.stderr else ""
    for record in [first, *rest]:
        validate("host-counters", record)
    errors = [a for r in rest for a in r["alerts"] if a["level"] == "error"]
    assert "TcpExtListenOverflows" in {a["kind"] for a in errors}
    assert all(r["ts_ns"] > first["ts_ns"] for r in rest)
    assert abs(first["ts_ns"] / 1e9 - time.time()) < 60
    bad = host("counters", "--netns", ns, "--fail-on", "error")
    assert bad.returncode == 2 and bad.stderr.startswith("tcpwhy: --fail-on: ")


def test_sysctl_fail_on_risky_setting(scene: Scene) -> None:
    ports = "32768 60999"
    sane = scene.namespace(
        {"net.ipv4.tcp_max_tw_buckets": 262144, "net.ipv4.ip_local_port_range": ports}
    )
    res = host("sysctl", "--netns", sane, "--format", "json", "--fail-on", "warning")
    assert res.returncode == 0, res.stdout
    doc = json.loads(res.stdout)
    validate("host-sysctl", doc)
    # the defaults still carry info-level risks (keepalive after 2 h, SYN retries for 2 min)
    assert "net.ipv4.tcp_keepalive_time" in {a["subject"] for a in doc["alerts"]}
    assert status("sysctl", "--netns", sane, "--fail-on", "info") == 1

    risky = scene.namespace(
        {
            "net.ipv4.tcp_max_tw_buckets": 262144,
            "net.ipv4.ip_local_port_range": ports,
            "net.core.somaxconn": 128,
        }
    )
    res = host("sysctl", "--netns", risky, "--format", "json", "--fail-on", "warning")
    assert res.returncode == 1, res.stdout
    doc = json.loads(res.stdout)
    validate("host-sysctl", doc)
    warned = [a for a in doc["alerts"] if a["level"] == "warning"]
    assert [a["subject"] for a in warned] == ["net.core.somaxconn"]
    row = next(r for r in doc["sysctls"] if r["key"] == "net.core.somaxconn")
    assert row["note_levels"] == ["warning"] and row["risks"][0]["text"] == row["notes"][0]
    assert status("sysctl", "--netns", risky, "--fail-on", "error") == 0  # no sysctl is an error
