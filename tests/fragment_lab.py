"""Record a capture with real IP fragmentation (needs root: network namespaces, TUN devices).

Two namespaces joined by a veth pair whose MTU is 1280. Each has a TUN device with an
MTU of 1400 whose packets a relay (below, run as a child process) carries to the other
side in GTP-U over UDP, over IPv4 for inner IPv4 and over IPv6 for inner IPv6. TCP
connections through the tunnel send full-sized segments, so the outer UDP datagrams are
larger than the path and the kernel fragments them (IPv4 on the router path, IPv6 at the
sender), as in a mobile core. A plain UDP datagram over IPv6 adds fragments with no TCP.
tcpdump records the veth: what tshark reassembles there, tcpwhy must too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RELAY = r"""
import fcntl, os, select, socket, struct, sys, time
side, peer4, peer6, stop_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tg0", 0x0001 | 0x1000))  # TUNSETIFF: TUN, no PI
u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u4.bind(("0.0.0.0", 2152))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); u6.bind(("::", 2152))
open(sys.argv[5], "w").close()
while time.time() < stop_at:
    r, _, _ = select.select([fd, u4, u6], [], [], 0.2)
    for s in r:
        if s == fd:
            pkt = os.read(fd, 65536)
            gtp = struct.pack(">BBHI", 0x30, 0xFF, len(pkt), 7) + pkt
            if pkt[0] >> 4 == 4:
                u4.sendto(gtp, (peer4, 2152))
            else:
                u6.sendto(gtp, (peer6, 2152))
        else:
            data = s.recv(65536)
            if len(data) > 8:
                os.write(fd, data[8:])
"""

SERVER = r"""
import socket, sys, threading
def serve(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 5001)); s.listen(); s.settimeout(8)
    c, _ = s.accept()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.sendall(b"got %d" % n); c.close()
ts = [threading.Thread(target=serve, args=a) for a in
      ((socket.AF_INET, "10.8.0.2"), (socket.AF_INET6, "fd00:8::2"))]
for t in ts: t.start()
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("fd00:9::2", 5002)); u.settimeout(4)
try:
    u.recv(65536)
except OSError:
    pass
for t in ts: t.join(10)
"""

CLIENT = r"""
import socket
for fam, addr in ((socket.AF_INET, "10.8.0.2"), (socket.AF_INET6, "fd00:8::2")):
    c = socket.create_connection((addr, 5001), timeout=5)
    c.sendall(bytes(range(256)) * 40)
    c.shutdown(socket.SHUT_WR)
    c.recv(100)
    c.close()
socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"u" * 3000, ("fd00:9::2", 5002))
"""


def available() -> str:
    """Why the lab cannot run here ("" if it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    if not shutil.which("tcpdump") or not shutil.which("ip"):
        return "needs tcpdump and ip"
    return ""


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def record(out: Path) -> None:
    """Write the capture to `out` (see the module's text)."""
    tag = f"{os.getpid() % 100000}"
    ns = {"a": f"twfa{tag}", "b": f"twfb{tag}"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in ns.values():
            _run("ip", "netns", "add", n)
        _run("ip", "link", "add", f"fa{tag}", "type", "veth", "peer", "name", f"fb{tag}")
        for side, idx in (("a", 1), ("b", 2)):
            dev = f"f{side}{tag}"
            _run("ip", "link", "set", dev, "netns", ns[side])
            ex = ("ip", "-n", ns[side])
            _run(*ex, "addr", "add", f"10.9.0.{idx}/24", "dev", dev)
            _run(*ex, "addr", "add", f"fd00:9::{idx}/64", "dev", dev, "nodad")
            _run(*ex, "link", "set", dev, "up", "mtu", "1280")
            _run(*ex, "link", "set", "lo", "up")
        stop_at = time.time() + 12
        for side, idx, peer in (("a", 1, 2), ("b", 2, 1)):
            ready = out.parent / f"relay-{side}.ready"
            procs.append(
                subprocess.Popen(
                    [
                        *("ip", "netns", "exec", ns[side], sys.executable, "-c", RELAY, side),
                        *(f"10.9.0.{peer}", f"fd00:9::{peer}", str(stop_at), str(ready)),
                    ]
                )
            )
            for _ in range(100):
                if ready.exists():
                    break
                time.sleep(0.05)
            ex = ("ip", "-n", ns[side])
            _run(*ex, "addr", "add", f"10.8.0.{idx}/24", "dev", "tg0")
            _run(*ex, "addr", "add", f"fd00:8::{idx}/64", "dev", "tg0", "nodad")
            _run(*ex, "link", "set", "tg0", "up", "mtu", "1400")
        dump = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns["a"], "tcpdump", "-U", "-s", "0"),
                *("-i", f"fa{tag}", "-w", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(dump)
        time.sleep(1.0)
        server = subprocess.Popen(["ip", "netns", "exec", ns["b"], sys.executable, "-c", SERVER])
        procs.append(server)
        time.sleep(0.5)
        _run("ip", "netns", "exec", ns["a"], sys.executable, "-c", CLIENT)
        server.wait(timeout=15)
        time.sleep(0.5)
        dump.terminate()
        dump.wait(timeout=5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


if __name__ == "__main__":
    record(Path(sys.argv[1]))
