"""Scenarios where the path answers instead of the peer: ICMP errors and path MTU.

A firewall that rejects with ICMP, a router without a route, a router whose
next link is smaller than the packets: each is played on the real kernel and
checked for what the application saw (the errno of connect(), a read timeout)
and what the kernel knew (`ss -i`'s pmtu, nft counters).
"""

from __future__ import annotations

import errno
import socket
import time

from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import CLIENT_IF, SERVER_IF, Lab, _mac, describe_exc
from tcpwhy.lab.runner import scenario

# ------------------------------------------------------------------------------------------
# Helpers


def dual_stack(lab: Lab) -> tuple[int, str, str]:
    """Give the relay topology the other address family too (client, router and server
    dual-stack, routed the same way): the family, the client's and the server's address."""
    v4 = lab.opts.ipv6  # the other family
    fam = socket.AF_INET if v4 else socket.AF_INET6

    def addr(net: int, host: int) -> str:
        return f"10.77.{net}.{host}" if v4 else f"fd00:77:{net}::{host}"

    plen, extra, f = ("/24", [], []) if v4 else ("/64", ["nodad"], ["-6"])
    c, m, s = lab.client_ns, lab.ns_of("middle"), lab.server_ns
    for ns, ifname, a in (
        (c, CLIENT_IF, addr(1, 2)),
        (m, "m0", addr(1, 1)),
        (m, "m1", addr(2, 1)),
        (s, SERVER_IF, addr(2, 2)),
    ):
        nsmod.run(["ip", "addr", "add", a + plen, "dev", ifname, *extra], ns)
    nsmod.run(["ip", *f, "route", "add", "default", "via", addr(1, 1)], c)
    nsmod.run(["ip", *f, "route", "add", "default", "via", addr(2, 1)], s)
    for ns, ifname, ip, peer_ns, peer_if in (
        (c, CLIENT_IF, addr(1, 1), m, "m0"),
        (m, "m0", addr(1, 2), c, CLIENT_IF),
        (s, SERVER_IF, addr(2, 1), m, "m1"),
        (m, "m1", addr(2, 2), s, SERVER_IF),
    ):
        mac = _mac(peer_ns, peer_if)
        nsmod.run(
            ["ip", "neigh", "replace", ip, "lladdr", mac, "dev", ifname, "nud", "permanent"], ns
        )
    return fam, addr(1, 2), addr(2, 2)


def _sock(lab: Lab, side: str, family: int) -> socket.socket:
    s = nsmod.socket_in(lab.ns_of(side), family, socket.SOCK_STREAM)
    lab._sockets.append(s)
    return s


def _connect_outcome(
    lab: Lab, family: int, addr: tuple[str, int], timeout: float = 5.0
) -> tuple[OSError | None, float]:
    """connect() from the client: the error it raised (None if it connected) and how long
    it took."""
    c = _sock(lab, "client", family)
    c.settimeout(timeout)
    t0 = time.monotonic()
    try:
        c.connect(addr)
    except OSError as exc:
        return exc, time.monotonic() - t0
    return None, time.monotonic() - t0


def _errno_name(e: int | None) -> str:
    return errno.errorcode.get(e or 0, str(e))


def _nft_count(lab: Lab, side: str, chain: str) -> int:
    out = nsmod.run(["nft", "list", "chain", "inet", "tcpwhy_lab", chain], lab.ns_of(side))
    return sum(int(tok.split()[0]) for tok in out.split("packets ")[1:])


def _pmtu(lab: Lab, side: str, port: int) -> list[int]:
    """`ss -ti`'s path MTU of `side`'s sockets with local or peer port `port`."""
    out = nsmod.run(["ss", "-Htin"], lab.ns_of(side))
    lines = out.splitlines()
    got = []
    for k, line in enumerate(lines):
        parts = line.split()
        if len(parts) >= 5 and not line.startswith(("\t", " ")):
            ports = {parts[3].rsplit(":", 1)[1], parts[4].rsplit(":", 1)[1]}
            if str(port) in ports and k + 1 < len(lines):
                for tok in lines[k + 1].split():
                    if tok.startswith("pmtu:"):
                        got.append(int(tok[5:]))
    return got


# ------------------------------------------------------------------------------------------
# Firewalls that reject with ICMP

REJECTS = (
    # (port offset, where, nft icmpx type, (ICMP type/code, errno), (ICMPv6 type/code, errno))
    (0, "server", "host-unreachable", ("3/1", errno.EHOSTUNREACH), ("1/3", errno.EHOSTUNREACH)),
    (1, "middle", "admin-prohibited", ("3/13", errno.EHOSTUNREACH), ("1/1", errno.EACCES)),
    (2, "server", "port-unreachable", ("3/3", errno.ECONNREFUSED), ("1/4", errno.ECONNREFUSED)),
)


def reject_rules(port: int, where: str) -> str:
    """The server's input filter, or the router's forward filter. The router rejects on the
    packets' second pass (back from the relay), so that its answer, like every answer in
    the lab, comes after connect() has sent the SYN and let go of the socket (an ICMP error
    that arrives while connect() still holds the socket is only a soft error on Linux)."""
    hook = "input" if where == "server" else "forward"
    match = "" if where == "server" else 'iifname "tun0" '
    rules = "\n".join(
        f"    {match}tcp dport {port + off} counter reject with icmpx type {what}"
        for off, side, what, _, _ in REJECTS
        if side == where
    )
    return (
        f"table inet tcpwhy_lab {{\n  chain {hook} {{\n"
        f"    type filter hook {hook} priority -300;\n{rules}\n  }}\n}}\n"
    )


@scenario(
    "icmp-reject",
    "firewalls reject with ICMP: host-unreachable and port-unreachable from the server, "
    "admin-prohibited from a router, over IPv4 and IPv6; connect() fails at once",
    """
    The server runs and listens on three ports, but firewalls answer every SYN to them
    with an ICMP error quoting the SYN (nft `reject with icmpx type …`, iptables REJECT
    --reject-with), instead of letting it in or dropping it: the server's own firewall
    rejects port 8080 with host-unreachable and 8082 with port-unreachable, a firewall
    on the router in between rejects 8081 with admin-prohibited. The client's kernel
    ends the connect() at once with the errno the ICMP code maps to: host-unreachable
    (ICMP 3/1, ICMPv6 1/3 address unreachable) and IPv4's admin-prohibited (3/13) give
    EHOSTUNREACH "No route to host"; ICMPv6's administratively prohibited (1/1) gives
    EACCES "Permission denied"; port-unreachable (3/3, ICMPv6 1/4) gives ECONNREFUSED
    "Connection refused", the same error a RST gives. Every host is dual-stack: each
    port is tried over IPv4 and IPv6. The ICMP's source tells who answered: the server's
    own address, or the router's. No SYN-ACK, no RST, no SYN retransmission.
    """,
    relay=True,
    finds="icmp-unreachable",
    shows="× 6 (host-unreachable and port-unreachable from the server, admin-prohibited from the router; IPv4 and IPv6)",
)
def icmp_reject(lab: Lab) -> None:
    port = lab.opts.port
    fam2, _, s_ip2 = dual_stack(lab)
    lab.say("lab", f"dual stack: the server is also {s_ip2}")
    for off, _, _, _, _ in REJECTS:
        for fam, ip in ((lab.family, lab.server_ip), (fam2, s_ip2)):
            s = _sock(lab, "server", fam)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port + off))
            s.listen(16)
    lab.say("server", f"listens on ports {port}, {port + 1}, {port + 2} (IPv4 and IPv6)")
    lab.nft(
        "server",
        reject_rules(port, "server"),
        f"reject port {port} with host-unreachable, {port + 2} with port-unreachable",
    )
    lab.nft("middle", reject_rules(port, "middle"), f"reject port {port + 1} with admin-prohibited")
    for off, where, what, v4, v6 in REJECTS:
        for fam, ip in ((lab.family, lab.server_ip), (fam2, s_ip2)):
            code, want = v6 if fam == socket.AF_INET6 else v4
            icmp = "ICMPv6" if fam == socket.AF_INET6 else "ICMP"
            exc, took = _connect_outcome(lab, fam, (ip, port + off))
            got = exc.errno if exc is not None else None
            lab.say(
                "client",
                f"connect() to {ip} port {port + off} → "
                f"{describe_exc(exc) if exc else 'connected'} after {1000 * took:.1f} ms",
            )
            lab.check(
                got == want and took < 0.5,
                f"{what} ({icmp} {code}, from the {where}): connect() failed at once with "
                f"{_errno_name(want)}",
            )
    n_server = _nft_count(lab, "server", "input")
    n_router = _nft_count(lab, "middle", "forward")
    lab.say("kernel", f"nft: the server rejected {n_server} SYNs, the router {n_router}")
    lab.check(n_server == 4 and n_router == 2, "one SYN per attempt, each rejected, none retried")


# ------------------------------------------------------------------------------------------
# A router without a route


@scenario(
    "icmp-no-route",
    "a router has no route to the destination: ICMP network unreachable, ENETUNREACH",
    """
    The client's default gateway (a router namespace) has routes to its two
    attached networks only (IPv4 and IPv6: every host is dual-stack). A connect() to an address beyond them reaches the
    router, which has no route for it and answers the SYN with ICMP destination
    unreachable, network unreachable (type 3 code 0; ICMPv6 1/0, no route to
    destination) from its own address. The client's connect() fails at once with
    ENETUNREACH "Network is unreachable". A connect() to the server, which the
    router can reach, succeeds through the same router: the route is missing for
    one network, not the router broken. Fix: the route on the router (or on the
    host that should have it), or the address in the client's configuration.
    """,
    relay=True,
    finds="icmp-unreachable",
    shows="× 2 (the router's network unreachable, IPv4 and IPv6)",
)
def icmp_no_route(lab: Lab) -> None:
    fam2, _, _ = dual_stack(lab)
    v6_first = lab.opts.ipv6
    for fam, lost in (
        (lab.family, "fd00:77:3::2" if v6_first else "10.77.3.2"),
        (fam2, "10.77.3.2" if v6_first else "fd00:77:3::2"),
    ):
        icmp = "ICMPv6 1/0" if fam == socket.AF_INET6 else "ICMP 3/0"
        lab.say("lab", f"the router has no route to {lost}")
        exc, took = _connect_outcome(lab, fam, (lost, lab.opts.port))
        lab.say(
            "client",
            f"connect() to {lost} port {lab.opts.port} → "
            f"{describe_exc(exc) if exc else 'connected'} after {1000 * took:.1f} ms",
        )
        lab.check(
            exc is not None and exc.errno == errno.ENETUNREACH and took < 0.5,
            f"connect() failed at once with ENETUNREACH (the router's {icmp})",
        )
    listener = lab.listen()
    c = _sock(lab, "client", lab.family)
    c.settimeout(5)
    c.connect(lab.server_addr())
    s, _ = listener.accept()
    lab._sockets.append(s)
    lab.say("client", "connect() to the server through the same router → established")
    c.sendall(b"ping\n")
    lab.check(s.recv(100) == b"ping\n", "the server is reachable through the router")
    c.close()
    s.close()
    time.sleep(0.1)


# ------------------------------------------------------------------------------------------
# Path MTU

LINK_MTU = 1280
BODY = 8192
HEADER = f"200 OK, {BODY} bytes follow\n".encode()
READ_TIMEOUT = 2.0


def _pmtu_lab(lab: Lab, icmp_allowed: bool) -> None:
    """The relay topology with a 1280-byte link in the router: the relay's TUN device, which
    every forwarded packet crosses. With `icmp_allowed` False the router's packet-too-big
    errors are dropped on their way out (as a firewall that drops all ICMP does)."""
    m = lab.ns_of("middle")
    nsmod.run(["ip", "link", "set", "tun0", "mtu", str(LINK_MTU)], m)
    lab.say("lab", f"middle namespace: its link tun0 has MTU {LINK_MTU}; client and server 1500")
    verdict = "accept" if icmp_allowed else "drop"
    lab.nft(
        "middle",
        "table inet tcpwhy_lab {\n  chain output {\n    type filter hook output priority 0;\n"
        f"    icmp type destination-unreachable icmp code frag-needed counter {verdict}\n"
        f"    icmpv6 type packet-too-big counter {verdict}\n  }}\n}}\n",
        ("counts" if icmp_allowed else "drops")
        + " the router's own fragmentation-needed / packet-too-big errors",
    )


def _download(lab: Lab, listener: socket.socket) -> tuple[int, str]:
    """Conn 1: a small request, a small response header, then a body in full-size segments.
    The client reads with a timeout of its own; returns (body bytes read, what ended it)."""
    c = _sock(lab, "client", lab.family)
    c.settimeout(5)
    c.connect(lab.server_addr())
    s, _ = listener.accept()
    lab._sockets.append(s)
    c.sendall(b"GET /report\n")
    s.recv(100)
    s.sendall(HEADER)
    time.sleep(0.05)
    s.sendall(b"x" * BODY)
    lab.say("server", f"sent a {len(HEADER)}-byte header, then a {BODY}-byte body")
    c.settimeout(READ_TIMEOUT)
    got = b""
    end = "all of it"
    try:
        while len(got) < len(HEADER) + BODY:
            data = c.recv(65536)
            if not data:
                end = "EOF"
                break
            got += data
    except TimeoutError:
        end = f"read timeout ({READ_TIMEOUT:g} s, the application's own)"
    body = max(0, len(got) - len(HEADER))
    lab.say("client", f"read the header and {body} bytes of the body; then {end}")
    c.close()
    lab.say("client", "close()")
    s.settimeout(1.0)
    try:
        outcome = "EOF" if not s.recv(100) else "data"
    except OSError as exc:
        outcome = describe_exc(exc)
    s.close()
    lab.say("server", f"read → {outcome}; close()")
    time.sleep(0.3)
    return body, end


def _upload(lab: Lab, listener: socket.socket) -> tuple[str, list[int]]:
    """Conn 2: the client announces an upload (small), the server says ready (small), the
    client sends the body in full-size segments and waits for the server's answer. Returns
    (what the client's wait for the answer ended with, the client socket's pmtu per ss)."""
    c = _sock(lab, "client", lab.family)
    c.settimeout(5)
    c.connect(lab.server_addr())
    s, _ = listener.accept()
    lab._sockets.append(s)
    c.sendall(f"PUT /upload {BODY}\n".encode())
    s.recv(100)
    s.sendall(b"ready\n")
    c.recv(100)
    got: list[int] = []

    def server() -> None:
        s.settimeout(READ_TIMEOUT + 1)
        n = 0
        try:
            while n < BODY:
                data = s.recv(65536)
                if not data:
                    break
                n += len(data)
            if n >= BODY:
                s.sendall(b"stored\n")
        except OSError:
            pass
        got.append(n)

    t = lab.spawn(server, "server")
    c.sendall(b"y" * BODY)
    lab.say("client", f"sent a {BODY}-byte upload (in the socket's buffer)")
    c.settimeout(READ_TIMEOUT)
    try:
        answer = c.recv(100)
        end = "answer: " + answer.decode().strip()
    except TimeoutError:
        end = f"read timeout ({READ_TIMEOUT:g} s, the application's own)"
    lab.say("client", f"waits for the server's answer → {end}")
    pmtu = _pmtu(lab, "client", c.getsockname()[1])
    lab.say("kernel", f"ss -ti on the client: pmtu {pmtu}")
    t.join(timeout=READ_TIMEOUT + 2)
    lab.say("server", f"received {got[0] if got else 0} bytes of the upload")
    c.close()
    s.close()
    lab.say("client", "close(); the server too")
    time.sleep(0.2)
    return end, pmtu


@scenario(
    "pmtu-black-hole",
    "a 1280-byte link on the path and its ICMP dropped: small packets pass, full-size "
    "segments vanish, the transfer hangs",
    """
    Client and server have MTU 1500 and agree on an MSS of 1460; a router between
    them forwards over a link with MTU 1280, and a firewall drops the router's ICMP
    "fragmentation needed" (packet too big over IPv6) that should tell the sender to
    send smaller packets. The handshake, the request and the small response header
    pass; every full-size segment is dropped at the router and nobody learns why.
    Uploading, the client's own full-size segments are retransmitted with backoff and
    never acknowledged, while the small ones before them were; only the short last
    segment gets through (the server SACKs it). The client's path MTU stays 1500.
    Downloading, the client sees the header, then only the body's short last segment,
    far past the header, then nothing until its read timeout; when it gives up and
    closes, the server's acknowledgment of that FIN carries a sequence number past
    all of it: data it sent that never arrived. Fix: MSS clamping on the router or tunnel
    (`nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu`),
    net.ipv4.tcp_mtu_probing=1 on the hosts, and letting ICMP type 3 code 4 (ICMPv6
    type 2) through every firewall.
    """,
    relay=True,
    finds="pmtu-black-hole",
    shows="× 2 (the upload seen at its sender, the download at its receiver)",
)
def pmtu_black_hole(lab: Lab) -> None:
    _pmtu_lab(lab, icmp_allowed=False)
    listener = lab.listen()
    upload_end, pmtu = _upload(lab, listener)
    lab.check(upload_end.startswith("read timeout"), "upload: no answer, the client timed out")
    lab.check(pmtu == [1500], "the client's path MTU stayed 1500: it never learned")
    body, end = _download(lab, listener)
    lab.check(body == 0 and end.startswith("read timeout"), "download: the header came, no body")
    dropped = _nft_count(lab, "middle", "output")
    lab.say("kernel", f"router nft: {dropped} of its packet-too-big errors dropped")
    lab.check(dropped >= 2, "the router did try to report the smaller MTU (errors dropped)")


@scenario(
    "pmtu-discovery",
    "the same 1280-byte link with ICMP allowed: packet too big honoured, smaller segments "
    "follow, both transfers complete",
    """
    The path of pmtu-black-hole, but the router's "fragmentation needed" (packet too
    big) errors reach the senders: path MTU discovery (RFC 1191, RFC 8201) working.
    Uploading, the client's full-size segments are answered by the router's ICMP
    errors carrying MTU 1280; the client's kernel lowers its path MTU (`ss -ti`:
    pmtu:1280) and sends the data again in segments that fit; the server answers.
    The download that follows needs no ICMP at all: the client's kernel remembers
    the path MTU to that server and advertises MSS 1240 in its SYN, so the server
    never sends a segment too big. A delay of one round trip, no failure.
    """,
    relay=True,
    finds="pmtu-discovery",
    shows="(info: MTU 1280 from the router, segments resent smaller)",
)
def pmtu_discovery(lab: Lab) -> None:
    _pmtu_lab(lab, icmp_allowed=True)
    listener = lab.listen()
    upload_end, pmtu = _upload(lab, listener)
    lab.check(upload_end == "answer: stored", "upload: the server stored it and answered")
    lab.check(pmtu == [LINK_MTU], f"the client's path MTU is now {LINK_MTU}")
    body, _ = _download(lab, listener)
    lab.check(body == BODY, "download: the whole body arrived")
    sent = _nft_count(lab, "middle", "output")
    lab.say("kernel", f"router nft: {sent} packet-too-big errors sent")
    lab.check(sent >= 1, "the router reported the smaller MTU")
