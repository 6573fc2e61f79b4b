"""TCP sockets as the kernel reports them: sock_diag netlink first, /proc/net/tcp{,6} as fallback.

sock_diag is what `ss` uses: it includes TIME_WAIT and SYN_RECV mini-sockets,
the listeners' accept-queue limit and tcp_info (for how long the peer has been
silent). /proc/net/tcp has the same sockets but no accept-queue limit.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Kernel numbering (include/net/tcp_states.h); the names are `ss` names in upper case.
STATE_NAMES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT_1",
    5: "FIN_WAIT_2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECV",  # TCP_NEW_SYN_RECV: request mini-socket, shown as SYN_RECV like ss does
}
STATES: tuple[str, ...] = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
)
TIMER_NAMES = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
INET_DIAG_INFO_EXT = 1 << (2 - 1)  # ask for tcp_info (INET_DIAG_INFO = 2)


@dataclass
class Owner:
    pid: int
    process: str
    fd: int


@dataclass
class Socket:
    family: str  # "ipv4" | "ipv6"
    state: str
    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    recv_q: int
    send_q: int
    inode: int
    uid: int
    timer: str = "off"
    expires_ms: int = 0
    retrans: int = 0
    ifname: str = ""
    peer_silent_ms: int | None = None  # tcp_info: time since the peer's last segment
    owners: list[Owner] = field(default_factory=list)

    @property
    def local(self) -> str:
        return format_endpoint(self.local_addr, self.local_port, self.ifname)

    @property
    def remote(self) -> str:
        return format_endpoint(self.remote_addr, self.remote_port)

    @property
    def remote_ip(self) -> str:
        return format_endpoint(self.remote_addr, 0).rsplit(":", 1)[0]

    @property
    def pid(self) -> int | None:
        return min(o.pid for o in self.owners) if self.owners else None

    @property
    def process(self) -> str | None:
        if not self.owners:
            return None
        return min(self.owners, key=lambda o: o.pid).process

    @property
    def orphan(self) -> bool:
        """No file descriptor refers to it: closed by its process, finished by the kernel alone."""
        return self.inode == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "local": self.local,
            "remote": self.remote,
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "pid": self.pid,
            "process": self.process,
            "owners": [{"pid": o.pid, "process": o.process, "fd": o.fd} for o in self.owners],
            "family": self.family,
            "inode": self.inode,
            "uid": self.uid,
            "timer": self.timer,
            "expires_ms": self.expires_ms,
            "retrans": self.retrans,
            "peer_silent_ms": self.peer_silent_ms,
        }


def format_endpoint(addr: str, port: int, ifname: str = "") -> str:
    """The way `ss -n` prints an endpoint: 127.0.0.1:80, [::1]:80, 0.0.0.0:*."""
    host = f"[{addr}]" if ":" in addr else addr
    if ifname:
        host += f"%{ifname}"
    return f"{host}:{port if port else '*'}"


def read_sock_diag_pyroute2() -> list[Socket]:
    """The same dump through pyroute2's DiagSocket: the reference the fast decoder is tested against."""
    from pyroute2 import DiagSocket

    out: list[Socket] = []
    with DiagSocket() as ds:
        ds.bind()
        for fam in (socket.AF_INET, socket.AF_INET6):
            for msg in ds.get_sock_stats(family=fam, extensions=INET_DIAG_INFO_EXT):
                out.append(_from_diag(msg))
    return out


# The dump itself is decoded with struct: pyroute2's generic decoder costs about
# 0.2 ms per socket, seconds on a busy host, too slow for `watch`.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_INFO = 2
TCPI_LAST_ACK_RECV = 56  # offset of tcpi_last_ack_recv in struct tcp_info
_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI2s2s16s16sI8s")  # inet_diag_req_v2
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")  # inet_diag_msg
_RTA = struct.Struct("=HH")
ALL_STATES = (1 << 12) - 1 | (1 << 12)  # every TCP state, NEW_SYN_RECV request sockets included


def _dump(fam: int, sock: socket.socket, seq: int) -> list[Socket]:
    req = _REQ.pack(fam, socket.IPPROTO_TCP, INET_DIAG_INFO_EXT, 0, ALL_STATES,
                    b"\0\0", b"\0\0", bytes(16), bytes(16), 0, bytes(8))  # fmt: skip
    hdr = _NLMSG.pack(
        _NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    sock.send(hdr + req)
    out: list[Socket] = []
    alen = 4 if fam == socket.AF_INET else 16
    fname = "ipv4" if fam == socket.AF_INET else "ipv6"
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return out
        off = 0
        while off + _NLMSG.size <= len(data):
            length, mtype, _flags, mseq, _pid = _NLMSG.unpack_from(data, off)
            if length < _NLMSG.size:
                raise OSError("sock_diag: malformed netlink message")
            body = off + _NLMSG.size
            end = off + length
            off += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, body)
                if err:
                    raise OSError(-err, f"sock_diag: {os.strerror(-err)}")
                continue
            if mtype != SOCK_DIAG_BY_FAMILY:
                continue
            (family, state, timer, retrans, sport, dport, src, dst, ifindex, _cookie,
             expires, rq, wq, uid, inode) = _MSG.unpack_from(data, body)  # fmt: skip
            silent: int | None = None
            a = body + _MSG.size
            while a + _RTA.size <= end:
                rlen, rtype = _RTA.unpack_from(data, a)
                if rlen < _RTA.size:
                    break
                if rtype == INET_DIAG_INFO and rlen - _RTA.size >= TCPI_LAST_ACK_RECV + 4:
                    (silent,) = struct.unpack_from("=I", data, a + _RTA.size + TCPI_LAST_ACK_RECV)
                a += (rlen + 3) & ~3
            out.append(
                Socket(
                    family=fname
                    if family == fam
                    else ("ipv6" if family == socket.AF_INET6 else "ipv4"),
                    state=STATE_NAMES.get(state, f"STATE_{state}"),
                    local_addr=socket.inet_ntop(fam, src[:alen]),
                    local_port=int.from_bytes(sport, "big"),
                    remote_addr=socket.inet_ntop(fam, dst[:alen]),
                    remote_port=int.from_bytes(dport, "big"),
                    recv_q=rq,
                    send_q=wq,
                    inode=inode,
                    uid=uid,
                    timer=TIMER_NAMES.get(timer, str(timer)),
                    expires_ms=expires,
                    retrans=retrans,
                    ifname=_ifname(ifindex),
                    peer_silent_ms=silent,
                )
            )


def read_sock_diag() -> list[Socket]:
    """All TCP sockets of the caller's network namespace through NETLINK_SOCK_DIAG, as `ss` reads them."""
    out: list[Socket] = []
    with socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG
    ) as sock:
        sock.bind((0, 0))
        for seq, fam in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            out.extend(_dump(fam, sock, seq))
    return out


def _ifname(index: int) -> str:
    if not index:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def _from_diag(msg: Any) -> Socket:
    fam = "ipv6" if msg["idiag_family"] == socket.AF_INET6 else "ipv4"
    silent: int | None = None
    try:
        info = msg.get_attr("INET_DIAG_INFO")
    except Exception:  # a tcp_info layout this pyroute2 cannot decode
        info = None
    if info is not None:
        try:
            silent = int(info["tcpi_last_ack_recv"])
        except (KeyError, TypeError, ValueError):
            silent = None
    return Socket(
        family=fam,
        state=STATE_NAMES.get(msg["idiag_state"], f"STATE_{msg['idiag_state']}"),
        local_addr=str(msg["idiag_src"]),
        local_port=int(msg["idiag_sport"]),
        remote_addr=str(msg["idiag_dst"]),
        remote_port=int(msg["idiag_dport"]),
        recv_q=int(msg["idiag_rqueue"]),
        send_q=int(msg["idiag_wqueue"]),
        inode=int(msg["idiag_inode"]),
        uid=int(msg["idiag_uid"]),
        timer=TIMER_NAMES.get(msg["idiag_timer"], str(msg["idiag_timer"])),
        expires_ms=int(msg["idiag_expires"]),
        retrans=int(msg["idiag_retrans"]),
        ifname=_ifname(int(msg["idiag_if"])),
        peer_silent_ms=silent,
    )


def _hex_addr(text: str, byteorder: str = sys.byteorder) -> str:
    """/proc/net/tcp prints addresses as 32-bit words in the host's byte order."""
    raw = bytes.fromhex(text)
    if byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(raw))


def parse_proc_net_tcp(
    text: str, family: str, byteorder: str = sys.byteorder, hz: int = 100
) -> list[Socket]:
    """Parse /proc/net/tcp or tcp6; listeners' queue limit is not in this file (send_q=0)."""
    out: list[Socket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, st = parts[1], parts[2], int(parts[3], 16)
        tx, rx = (int(x, 16) for x in parts[4].split(":"))
        tr, when = parts[5].split(":")
        laddr, lport = local.split(":")
        raddr, rport = remote.split(":")
        out.append(
            Socket(
                family=family,
                state=STATE_NAMES.get(st, f"STATE_{st}"),
                local_addr=_hex_addr(laddr, byteorder),
                local_port=int(lport, 16),
                remote_addr=_hex_addr(raddr, byteorder),
                remote_port=int(rport, 16),
                # ss shows the accept queue as Recv-Q and unacked bytes as Send-Q, like here
                recv_q=rx,
                send_q=tx,
                inode=int(parts[9]),
                uid=int(parts[7]),
                timer=TIMER_NAMES.get(int(tr, 16), tr),
                expires_ms=int(when, 16) * 1000 // hz,
                retrans=int(parts[6], 16),
            )
        )
    return out


def read_procfs(root: Path = Path("/proc/net")) -> list[Socket]:
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: list[Socket] = []
    for name, fam in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        try:
            text = (root / name).read_text()
        except FileNotFoundError:
            continue  # IPv6 disabled
        out.extend(parse_proc_net_tcp(text, fam, hz=hz))
    return out


def read_sockets() -> tuple[list[Socket], str, str | None]:
    """Sockets, which source answered, and why the better source was not used."""
    try:
        return read_sock_diag(), "sock_diag", None
    except Exception as exc:  # no inet_diag module, netlink refused, …
        why = f"sock_diag unavailable ({type(exc).__name__}: {exc}); read /proc/net/tcp instead: no accept-queue limits, no tcp_info"
    try:
        return read_procfs(), "/proc/net/tcp", why
    except OSError as exc:
        from tcpwhy.errors import EnvironmentProblem

        raise EnvironmentProblem(
            "sockets", f"neither sock_diag nor /proc/net/tcp readable: {exc}"
        ) from None
