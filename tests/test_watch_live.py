"""`watch -i` under load: kernel drops are provoked for real, reported, and served as metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.gates import LIVE_SLACK_S

REPO = Path(__file__).resolve().parents[1]
TCPWHY = [sys.executable, "-m", "tcpwhy"]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}

# one TCP connection on lo writing small segments as fast as it can (no coalescing)
BURST = textwrap.dedent(
    """
    import socket, sys, threading
    n = int(sys.argv[1])
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    def sink():
        c, _ = srv.accept()
        while c.recv(1 << 16):
            pass
        c.close()
    th = threading.Thread(target=sink); th.start()
    s = socket.create_connection(srv.getsockname())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        s.send(b"x" * 64)
    s.close(); th.join()
    """
)


def _scrape(ns: str, port: int) -> str:
    from tcpwhy.lab import ns as nsmod

    url = f"http://127.0.0.1:{port}/metrics"
    # the endpoint listens in the namespace
    with nsmod.entered(ns), urllib.request.urlopen(url, timeout=2) as r:
        return str(r.read().decode())


def _drops(text: str) -> int:
    m = re.search(r"^tcpwhy_capture_drops_total (\S+)$", text, re.M)
    assert m, text
    return int(float(m.group(1)))


@pytest.mark.root
def test_watch_reports_the_kernels_drops_and_serves_them(netns_ok: None) -> None:
    """A 1 MB capture buffer and a watcher that is held still (SIGSTOP) while a burst
    passes: the ring overflows and the kernel drops packets. The summary reports the
    kernel's count and warns, and /metrics serves the same number."""
    from tcpwhy.lab import ns as nsmod

    ns = nsmod.new_name("wdrop")
    nsmod.create_namespace(ns)
    nsmod.sysctl(ns, {"net.ipv4.tcp_autocorking": 0})
    port = 9464
    p = None
    try:
        cmd = [
            "ip", "netns", "exec", ns, *TCPWHY, "watch", "-i", "lo", "-B", "1",
            "--summary-every", "0", "--metrics", f"127.0.0.1:{port}",
        ]  # fmt: skip
        p = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        assert p.stderr is not None
        assert "buffer 1 MB" in p.stderr.readline().decode()
        assert _drops(_scrape(ns, port)) == 0
        # the watcher cannot keep up: it is stopped while the burst passes
        os.kill(p.pid, signal.SIGSTOP)
        try:
            nsmod.run([sys.executable, "-c", BURST, "100000"], ns)
        finally:
            os.kill(p.pid, signal.SIGCONT)
        # tcpdump is asked for the kernel's counters once a second: wait until they settle
        seen, last, stable_since = 0, -1, time.monotonic()
        deadline = time.monotonic() + 10 + LIVE_SLACK_S
        while time.monotonic() < deadline:
            seen = _drops(_scrape(ns, port))
            if seen != last:
                last, stable_since = seen, time.monotonic()
            elif seen > 0 and time.monotonic() - stable_since > 2.5:
                break
            time.sleep(0.2)
        assert seen > 0
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 143
        err = p.stderr.read().decode()
        assert "Traceback" not in err
        m = re.search(r"warning: ([\d,]+) packets? dropped by the kernel", err)
        assert m, err
        assert int(m.group(1).replace(",", "")) == seen
        assert (
            f"tcpwhy: lo: warning: the kernel dropped {seen:,} packets: findings may be missing"
            in err
        )
        # what was followed is what the kernel kept: fewer than the burst's 100000 segments
        m = re.search(r"tcpwhy: watch: ([\d,]+) packets", err)
        assert m and 0 < int(m.group(1).replace(",", "")) < 100_000, err
    finally:
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        nsmod.delete_namespace(ns)
