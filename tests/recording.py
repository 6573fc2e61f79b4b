"""Helpers for tests that record live traffic with tcpdump."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any


def wait_until_written(pcap: Path, quiet: float = 1.0, limit: float = 15.0) -> None:
    """Wait until tcpdump's file has stopped growing for `quiet` seconds (at most `limit`):
    the last packets reach the file late on a loaded machine, even in immediate mode."""
    size, still, deadline = -1, 0.0, time.monotonic() + limit
    while still < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = pcap.stat().st_size
        still = still + 0.1 if now == size else 0.0
        size = now


def record_loopback(
    pcap: Path, port: int, stderr: Any = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """tcpdump writing the loopback packets of TCP `port` to `pcap` as they come, with a 16 MB
    buffer (a loaded run of the default one dropped 12 packets of a test's handshakes)."""
    return subprocess.Popen(
        [
            *("tcpdump", "-i", "lo", "-B", "16384", "--immediate-mode", "-U"),
            *("-w", str(pcap), f"tcp port {port}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
