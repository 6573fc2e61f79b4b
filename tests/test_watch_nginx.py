"""`tcpwhy watch -i` against a real server: nginx (the distribution's package) closes an idle
keep-alive connection, a pooled client (http.client) reuses it, is reset, and retries on a
new connection. The watcher on the client's veth names the stale reuse within 1 s of the
server's RST (capture time of the RST against the time its line was read), serves it on
/metrics, names the retry, and `--keep` holds every packet of the failed connection from
its SYN on.

Two namespaces this test creates and removes, joined by a veth pair; nginx runs with its
own configuration in a temporary directory and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.gates import LIVE_SLACK_S, need

REPO = Path(__file__).resolve().parents[1]
TCPWHY = [sys.executable, "-m", "tcpwhy"]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}
CLIENT, SERVER, PORT, METRICS = "10.98.0.1", "10.98.0.2", 8080, 9464
KEEPALIVE_S = 1

# a pooled client: one http.client connection for several requests, idle past the server's
# keep-alive timeout, reused (the server has closed it: reset), and the request retried on a
# new connection, as a pool does
CLIENT_PY = textwrap.dedent(
    """
    import http.client, json, sys, time
    host, port, n, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conn = http.client.HTTPConnection(host, port, timeout=5)

    def get():
        conn.request("GET", "/item")
        r = conn.getresponse()
        r.read()
        return r.status, conn.sock.getsockname()[1]

    pooled = set()
    for _ in range(n):
        pooled.add(get())
        time.sleep(0.3)
    time.sleep(idle)
    try:
        get()
        failed = None
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
        failed = type(exc).__name__
        conn.close()
    status, retry_port = get()  # the retry, on a new connection
    conn.close()
    print(json.dumps({"pooled": sorted(pooled), "failed": failed, "retry": [status, retry_port]}))
    """
)


def _records(path: Path) -> list[bytes]:
    """The frames of a classic pcap (the kept file), without their record headers."""
    raw = path.read_bytes()
    out, pos = [], 24
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        out.append(raw[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    return out


def _ports(frame: bytes) -> tuple[int, int]:
    """An Ethernet/IPv4/TCP frame's ports."""
    ihl = (frame[14] & 15) * 4
    sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
    return int(sport), int(dport)


def _tcp_flags(frame: bytes) -> int:
    ihl = (frame[14] & 15) * 4
    return frame[14 + ihl + 13]


def _scrape(ns: str) -> str:
    from tcpwhy.lab import ns as nsmod

    with (
        nsmod.entered(ns),
        urllib.request.urlopen(f"http://127.0.0.1:{METRICS}/metrics", timeout=2) as r,
    ):
        return str(r.read().decode())


def _found(text: str, kind: str) -> float:
    m = re.search(
        rf'^tcpwhy_findings_total\{{kind="{kind}",server="{SERVER}:{PORT}"\}} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


@pytest.mark.root
def test_watch_names_nginx_stale_keepalive_live(tmp_path: Path, netns_ok: None) -> None:
    from tcpwhy.lab import nginx
    from tcpwhy.lab import ns as nsmod

    need(os.path.exists(nginx.NGINX), "nginx not installed (the distribution's package)")
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    cns, sns = nsmod.new_name("wnc"), nsmod.new_name("wns")
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    keep = tmp_path / "keep"
    try:
        for ns in (cns, sns):
            nsmod.create_namespace(ns)
        nsmod.veth_pair(cns, sns, CLIENT, SERVER)
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            nginx.config(tmp_path, PORT, addr=SERVER, keepalive=f"{KEEPALIVE_S}s", body="item\n")
        )
        server = nginx.start(sns, conf, tmp_path)
        procs.append((server, signal.SIGQUIT))
        nginx.wait_listening(cns, PORT, server, secs=10 + LIVE_SLACK_S, addr=SERVER)
        # the watcher starts after that probe: it sees only the client's connections
        watch = subprocess.Popen(
            ["ip", "netns", "exec", cns, *TCPWHY, "watch", "-i", "c0", "--format", "jsonl",
             "--summary-every", "0", "--metrics", f"127.0.0.1:{METRICS}",
             "--keep", str(keep), "--keep-before", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )  # fmt: skip
        procs.append((watch, signal.SIGTERM))
        assert watch.stderr is not None and watch.stdout is not None
        assert "tcpwhy: watching c0" in watch.stderr.readline().decode()
        got: list[tuple[float, dict[str, Any]]] = []

        def read() -> None:
            assert watch.stdout is not None
            for line in watch.stdout:
                got.append((time.time(), json.loads(line)))

        threading.Thread(target=read, daemon=True).start()

        def wait_for(kind: str) -> tuple[float, dict[str, Any]]:
            end = time.monotonic() + 10 + LIVE_SLACK_S  # a bound on waiting, not a timing
            while time.monotonic() < end and not any(d["kind"] == kind for _, d in got):
                time.sleep(0.02)
            hits = [(at, d) for at, d in got if d["kind"] == kind]
            if not hits:
                watch.send_signal(signal.SIGTERM)
                watch.wait(timeout=30)
                assert watch.stderr is not None
                raise AssertionError((kind, [d["kind"] for _, d in got], watch.stderr.read()))
            return hits[0]

        client = subprocess.run(
            ["ip", "netns", "exec", cns, sys.executable, "-c", CLIENT_PY, SERVER, str(PORT),
             "4", str(KEEPALIVE_S + 0.6)],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        ran = json.loads(client.stdout)
        # the pool reused one connection; the reuse failed; the retry was answered
        assert len(ran["pooled"]) == 1 and ran["pooled"][0][0] == 200, ran
        assert ran["failed"] is not None and ran["retry"][0] == 200, ran
        pooled_port, retry_port = ran["pooled"][0][1], ran["retry"][1]

        at, d = wait_for("stale-keepalive-reuse")
        rst = d["timeline"][-1]
        assert "RST" in rst["packet"] and rst["sender"] == "server", rst
        assert rst["ts_ns"] == max(s["ts_ns"] for s in d["timeline"])
        # the bound: the line is read within 1 s of the RST's capture time
        assert at - rst["ts_ns"] / 1e9 <= 1.0, (at, rst["ts_ns"])
        assert d["group"] == {**d["group"], "server": f"{SERVER}:{PORT}", "count": 1}
        assert re.search(r"server idle timeout ≈ 1\.0\d s", d["summary"]), d["summary"]
        # /metrics counts it: updated before the line was printed
        assert _found(_scrape(cns), "stale-keepalive-reuse") == 1.0

        # the retry is named once the retry's connection has ended (closed, then its linger)
        _, r = wait_for("request-retried")
        assert r["streams"] == d["streams"], (r["streams"], d["streams"])
        assert "retried on a new connection" in r["summary"]
        text = _scrape(cns)
        assert _found(text, "request-retried") == 1.0, text
        assert _found(text, "stale-keepalive-reuse") == 1.0, text

        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 143
        err = watch.stderr.read().decode()
        assert "Traceback" not in err, err
        assert "tcpwhy: watch:" in err and "2 finding groups (2 instances)" in err, err

        # --keep: every packet of the failed connection, from its SYN, and nothing else
        files = sorted(keep.glob("tcpwhy-keep-*.pcap"))
        assert len(files) == 1, files
        frames = _records(files[0])
        assert {p for f in frames for p in _ports(f)} == {pooled_port, PORT}
        flags = [_tcp_flags(f) for f in frames]
        assert flags[0] == 0x02  # the pooled connection's SYN
        # the handshake, 5 requests and their answers, the server's FIN, the RST
        assert sum(1 for f in frames if len(f) > 14 + 20 + 32 + 10) >= 2 * 4 + 1
        assert any(fl & 0x04 for fl in flags) and any(fl & 0x01 for fl in flags)
        assert f"kept {len(frames)} packets in 1 files" in err, err
        assert retry_port != pooled_port
    finally:
        for p, sig in reversed(procs):
            if p.poll() is None:
                p.send_signal(sig)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns in (cns, sns):
            nsmod.delete_namespace(ns)
