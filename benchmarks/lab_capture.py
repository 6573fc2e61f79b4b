"""How the lab records: its AF_PACKET capture against tcpdump (libpcap) on the same traffic.

    sudo python benchmarks/lab_capture.py [--segments 100000]

In a network namespace made for the run (loopback only), a client sends
SEGMENTS small segments (TCP_NODELAY, one write each) to a server that reads
and discards them, while one capturer records the namespace's loopback: first
the lab's capture (an AF_PACKET socket with a 32 MB buffer, written by
tcpwhy's own pcap writer), then tcpdump (`-B 32768`, libpcap's memory-mapped
ring). For each it prints the frames the kernel delivered, the frames it
dropped, the frames written, and the capturer's CPU time. The namespace is
removed at the end, also on error.
"""

from __future__ import annotations

import argparse
import re
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time

from tcpwhy.capture.live import LiveCapture
from tcpwhy.lab import ns as nsmod


def traffic(ns: str, segments: int, port: int = 9000) -> float:
    """Send the segments through the namespace's loopback; seconds it took."""
    srv = nsmod.socket_in(ns)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)

    def sink() -> None:
        conn, _ = srv.accept()
        while conn.recv(1 << 16):
            pass
        conn.close()

    th = threading.Thread(target=sink)
    th.start()
    cli = nsmod.socket_in(ns)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cli.connect(("127.0.0.1", port))
    payload = b"x" * 200
    t0 = time.perf_counter()
    for _ in range(segments):
        cli.send(payload)
    cli.close()
    th.join()
    srv.close()
    return time.perf_counter() - t0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def with_lab_capture(ns: str, segments: int, path: str, baseline: float) -> dict[str, float]:
    """The capture thread shares this process with the traffic: its CPU is the process's
    CPU for the run less a run of the same traffic without capture (`baseline`)."""
    with nsmod.entered(ns):
        sock = LiveCapture.open_socket("lo")
    cap = LiveCapture(sock, path).start()
    c0 = _cpu()
    secs = traffic(ns, segments)
    time.sleep(0.3)
    cap.stop()
    cpu = _cpu() - c0 - baseline
    return {
        "seconds": secs,
        "delivered": cap.packets,
        "dropped": cap.drops,
        "written": cap.written,
        "cpu": cpu,
    }


def with_tcpdump(ns: str, segments: int, path: str) -> dict[str, float]:
    p = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            "lo",
            "-B",
            "32768",
            "-s",
            "262144",
            "-w",
            path,
            "tcp",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # let tcpdump open its ring
    secs = traffic(ns, segments)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = {
        k: int(v)
        for v, k in re.findall(
            r"(\d+) packets? (captured|received by filter|dropped by kernel)", err
        )
    }
    return {
        "seconds": secs,
        "delivered": got.get("received by filter", -1),
        "dropped": got.get("dropped by kernel", -1),
        "written": got.get("captured", -1),
        "cpu": ru.ru_utime + ru.ru_stime,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--segments", type=int, default=100_000)
    a = ap.parse_args()
    nsmod.check_root()
    ns = nsmod.new_name("bench")
    nsmod.create_namespace(ns)
    try:
        nsmod.run(["ip", "link", "set", "lo", "up"], ns)
        c0 = _cpu()
        traffic(ns, a.segments)
        baseline = _cpu() - c0
        with tempfile.TemporaryDirectory() as tmp:
            rows = [
                (
                    "lab capture (AF_PACKET + pcap writer)",
                    with_lab_capture(ns, a.segments, f"{tmp}/a.pcap", baseline),
                ),
                ("tcpdump -B 32768 (libpcap)", with_tcpdump(ns, a.segments, f"{tmp}/b.pcap")),
            ]
    finally:
        nsmod.delete_namespace(ns)
    print(f"{a.segments:,} segments of 200 bytes over a namespace's loopback")
    print(f"{'capturer':<40}{'delivered':>10}{'dropped':>9}{'written':>9}{'CPU s':>7}")
    for name, r in rows:
        print(
            f"{name:<40}{r['delivered']:>10,}{r['dropped']:>9,}{r['written']:>9,}{r['cpu']:>7.2f}"
        )


if __name__ == "__main__":
    main()
