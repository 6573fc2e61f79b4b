"""HTTP/1.1 ``Upgrade: h2c`` then ``101 Switching Protocols``: the frames start after the
heads (the client's after its preface), as tshark 4.0 dissects them.

Recorded live on lo: curl ``--http2`` (which asks for the upgrade on http://) against a
small server that answers 101, then SETTINGS, SETTINGS ack and GOAWAY (nginx does not
upgrade). tshark reads the stream as HTTP by ``-d tcp.port==N,http``; tcpwhy by content.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tcpwhy.capture import read_table
from tcpwhy.decode import http2
from tcpwhy.filter import FilterContext, compile_filter
from tests.gates import need

SERVER = r"""
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
c, _ = srv.accept()
buf = b""
while b"\r\n\r\n" not in buf:
    buf += c.recv(4096)
c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
c.sendall(bytes.fromhex("000000040000000000"))  # SETTINGS
c.settimeout(5)
if c.recv(4096):  # the client's preface and SETTINGS
    c.sendall(bytes.fromhex("000000040100000000"))  # SETTINGS ack
    c.sendall(bytes.fromhex("0000080700000000000000000100000000"))  # GOAWAY, last stream 1
c.close()
"""

FILTERS = (
    "http2",
    "http2.type",
    "http2.type == 4",
    "http2.type == 7",
    "http2.flags",
    "http2.goaway.last_stream_id == 1",
    "http2.streamid == 0",
)


def _tshark(pcap: Path, port: int, flt: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},http", "-Y", flt,
         "-T", "fields", "-e", "frame.number"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return [int(x) for x in out.split()]


def test_upgrade_frames_match_tshark(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root to capture on lo")
    need(shutil.which("tcpdump") is not None, "tcpdump not installed")
    need(shutil.which("tshark") is not None, "tshark not installed")
    need(shutil.which("curl") is not None, "curl not installed")
    srv = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert srv.stdout is not None
    port = int(srv.stdout.readline())
    pcap = tmp_path / "upgrade.pcap"
    td = subprocess.Popen(
        ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", str(pcap), f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # tcpdump writes its file header once it listens
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (pcap.exists() and pcap.stat().st_size >= 24):
            time.sleep(0.05)
        time.sleep(0.5)
        subprocess.run(
            ["curl", "-s", "--http2", "-o", "/dev/null", f"http://127.0.0.1:{port}/"],
            timeout=20,
            capture_output=True,
        )
        srv.wait(timeout=10)
        size, still, deadline = -1, 0.0, time.monotonic() + 15
        while still < 1.0 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = pcap.stat().st_size
            still = still + 0.1 if now == size else 0.0
            size = now
    finally:
        td.terminate()
        td.wait(timeout=10)
        if srv.poll() is None:
            srv.kill()
    t = read_table(str(pcap))
    ctx = FilterContext(t)
    f = http2.find_frames(t, ctx.streams["stream"], ctx.streams["dir"])
    assert f.h2_streams.tolist() == [0]
    # the server's SETTINGS, SETTINGS ack and GOAWAY; the client's preface and SETTINGS
    assert (f.ftype == http2.GOAWAY).sum() == 1 and (f.ftype == -1).sum() == 1
    for flt in FILTERS:
        m = compile_filter(flt).mask(t, ctx)
        ref = _tshark(pcap, port, flt)
        assert ref, flt
        assert [int(x) for x in t["frame"][m].tolist()] == ref, flt
