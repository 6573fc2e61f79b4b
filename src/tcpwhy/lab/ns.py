"""Throw-away network namespaces: creation, per-thread entry, sysctls, nft, cleanup.

Sockets belong to the namespace of the thread that created them, so the lab
enters a namespace only for the instant of `socket()` (or opening the TUN
device) and then runs every party as a thread of one process. Everything a
run creates lives inside namespaces named ``tcpwhy-lab-<pid>-…``: deleting
them removes veths, TUN devices, routes and nft rules together, and a later
run can recognise leftovers of a killed run by the dead pid in the name.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence

from tcpwhy.errors import EnvironmentProblem
from tcpwhy.netns import setns

PREFIX = "tcpwhy-lab-"
NETNS_DIR = "/var/run/netns"

_counter = 0
_counter_lock = threading.Lock()


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with this thread in namespace `ns` (other threads are unaffected)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def socket_in(
    ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    with entered(ns):
        return socket.socket(family, type, proto)


def run(argv: Sequence[str], ns: str | None = None, input: str | None = None) -> str:
    """Run a command (inside `ns` via `ip netns exec`), raising with its stderr on failure."""
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    p = subprocess.run(full, input=input, capture_output=True, text=True)
    if p.returncode != 0:
        raise EnvironmentProblem("lab", f"{' '.join(full)}: {p.stderr.strip() or p.returncode}")
    return p.stdout


def check_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("lab", "needs root (network namespaces, veth, TUN, nft)")
    if not os.path.exists("/proc/thread-self/ns/net"):
        raise EnvironmentProblem("lab", "this kernel has no network namespaces")


def new_name(role: str) -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    return f"{PREFIX}{os.getpid()}-{n}{role}"


def list_lab_namespaces() -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(ns: str) -> None:
    """Kill what still runs inside (only processes of this lab's namespace) and delete it."""
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for tok in p.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            if int(tok) != os.getpid():
                os.kill(int(tok), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def remove_leftovers() -> list[str]:
    """Delete namespaces of lab runs whose process is gone (a run that was killed)."""
    removed = []
    for ns in list_lab_namespaces():
        m = re.match(rf"{re.escape(PREFIX)}(\d+)-", ns)
        if m and (int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1)))):
            continue
        delete_namespace(ns)
        removed.append(ns)
    return removed


def create_namespace(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "set", "lo", "up"], ns)


def veth_pair(cns: str, sns: str, client: str, server: str) -> None:
    """Two namespaces joined by one veth pair, c0 (address `client`) and s0 (`server`),
    both /24, offloads off: the wire between a client and a server host."""
    run(
        [
            "ip",
            "link",
            "add",
            "c0",
            "netns",
            cns,
            "type",
            "veth",
            "peer",
            "name",
            "s0",
            "netns",
            sns,
        ]
    )
    for ns, ifname, addr in ((cns, "c0", client), (sns, "s0", server)):
        run(["ip", "addr", "add", f"{addr}/24", "dev", ifname], ns)
        run(["ip", "link", "set", ifname, "up"], ns)
        disable_offloads(ns, ifname)  # segments as a NIC puts them on the wire


def sysctl(ns: str, settings: dict[str, object]) -> None:
    if settings:
        run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())], ns)


def nft(ns: str, ruleset: str) -> None:
    run(["nft", "-f", "-"], ns, input=ruleset)


# Legacy ethtool ioctls: no ethtool binary needed to switch offloads off.
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
ETHTOOL_SSG = 0x19
ETHTOOL_STSO = 0x1F
ETHTOOL_SGSO = 0x24
ETHTOOL_SGRO = 0x2C


def disable_offloads(ns: str, ifname: str) -> None:
    """Software checksums and MTU-sized segments, so the capture shows what a wire would carry."""
    s = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for cmd in (ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO, ETHTOOL_SSG, ETHTOOL_STXCSUM):
            data = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(data))
            with contextlib.suppress(OSError):
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    finally:
        s.close()
