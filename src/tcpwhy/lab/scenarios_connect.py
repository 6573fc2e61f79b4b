"""Opening a connection: a SYN refused, a SYN never answered, a full accept queue, a SYN
flood met with SYN cookies.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

from tcpwhy.decode.table import SYN
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Lab, describe_exc
from tcpwhy.lab.packets import transport_checksum
from tcpwhy.lab.relay import HOLD, PASS, Seg
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import (
    connect,
    drop_rule,
    nft_dropped,
    recv_outcome,
    relay_of,
    wait_until,
)


@scenario(
    "refused",
    "SYN to a port nobody listens on: RST, connect() fails with ECONNREFUSED at once",
    """
    Nobody listens on the port: the server's kernel answers the SYN with RST+ACK
    (seq 0, ack = the SYN's sequence + 1) and the client's connect() fails
    immediately with "Connection refused" — within one round trip, unlike a
    dropped SYN, which waits for the SYN timeout. Typical during deploys and
    restarts, when clients connect before the new process listens.
    """,
    finds="connection-refused",
)
def refused(lab: Lab) -> None:
    n = lab.opts.count or 1
    for _ in range(n):
        c = lab.sock("client")
        c.settimeout(5)
        t0 = time.monotonic()
        try:
            c.connect(lab.server_addr())
        except ConnectionRefusedError as exc:
            lab.say(
                "client",
                f"connect() → {describe_exc(exc)} after {1000 * (time.monotonic() - t0):.1f} ms",
            )
        else:
            lab.expect(False, "connect() succeeded to a port nobody listens on")
        c.close()
    lab.check(True, f"{n} connect() refused")


@scenario(
    "syn-timeout",
    "SYNs silently dropped: retransmissions with exponential backoff, then connect() times out",
    """
    A firewall rule in the server's namespace drops every packet to the port
    without answering (as a DROP rule, a security group or a dead host does).
    The client's kernel retransmits the SYN after 1 s, then 2 s, 4 s … (doubling;
    this namespace sets tcp_syn_linear_timeouts=0, newer kernels otherwise
    retry once a second first) and gives up after tcp_syn_retries retransmissions
    — here shortened from 6 (about 130 s) to 2 — with ETIMEDOUT. Unlike
    "refused", nothing ever comes back.
    """,
    finds="syn-timeout",
)
def syn_timeout(lab: Lab) -> None:
    retries = lab.opts.count or 2
    lab.sysctl(
        "client", {"net.ipv4.tcp_syn_retries": retries, "net.ipv4.tcp_syn_linear_timeouts": 0}
    )
    lab.nft("server", drop_rule(lab.opts.port, "dport"), f"drop everything to port {lab.opts.port}")
    lab.listen()
    result: list[tuple[float, BaseException | None]] = []

    def client() -> None:
        c = lab.sock("client")
        t0 = time.monotonic()
        try:
            c.connect(lab.server_addr())
        except OSError as exc:
            result.append((time.monotonic() - t0, exc))
        else:
            result.append((time.monotonic() - t0, None))

    lab.say("client", "connect() (blocking, no timeout of its own)")
    t = lab.spawn(client, "client")
    time.sleep(1.5)
    rows = lab.ss("client", "while connecting")
    lab.check(rows and rows[0].state == "SYN-SENT", "client socket in SYN-SENT")
    t.join(timeout=2 ** (retries + 1) + 5)
    lab.expect(result, "connect() did not return")
    elapsed, exc = result[0]
    lab.say(
        "client", f"connect() → {describe_exc(exc) if exc else 'connected'} after {elapsed:.2f}s"
    )
    lab.check(
        isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, "connect() failed with ETIMEDOUT"
    )
    expected = 2 ** (retries + 1) - 1
    lab.check(abs(elapsed - expected) < 1.0, f"gave up after ≈{expected}s (1 + 2 + … backoff)")
    dropped = nft_dropped(lab, "server")
    lab.say("kernel", f"server nft counter: {dropped} SYNs dropped")
    lab.check(dropped == retries + 1, f"{retries + 1} SYNs sent (1 + {retries} retransmissions)")


@scenario(
    "accept-queue-overflow",
    "tiny listen backlog, nobody accepts: SYNs and final ACKs dropped (abort_on_overflow=0) or RST (=1)",
    """
    A listener with backlog 1 that never calls accept(): the accept queue holds
    limit+1 = 2 connections. Part 1 (tcp_abort_on_overflow=0, the default): two
    handshakes are held briefly in flight by the relay so that their final ACKs
    arrive together; the second finds the queue full and the server's kernel
    drops it — its client thinks it is connected and sends a request, which is
    dropped too, while the server retransmits the SYN-ACK (the request socket
    sits in SYN-RECV). A further client's SYN is dropped outright (queue full, since
    Linux 4.10): SYN retransmissions and a connect() timeout. Part 2
    (tcp_abort_on_overflow=1, on port+1): the overflowing final ACK is answered
    with RST, so that client's first request fails with "Connection reset by
    peer". `ss -lnt` shows the queue: Recv-Q (current) above Send-Q (limit).
    Counter: TcpExtListenOverflows. Fix: accept faster, raise somaxconn and the
    application's backlog.
    """,
    relay=True,
    finds="accept-queue-overflow",
)
def accept_queue_overflow(lab: Lab) -> None:
    relay = relay_of(lab)
    base = lab.opts.port
    lab.sysctl("client", {"net.ipv4.tcp_syn_linear_timeouts": 0})
    for abort, port in ((0, base), (1, base + 1)):
        lab.sysctl("server", {"net.ipv4.tcp_abort_on_overflow": abort})
        listener = lab.listen(backlog=1, port=port)
        lab.say("server", f"listen(backlog=1) on port {port}; never calls accept()")
        holding = threading.Event()
        marked: set[int] = set()
        held: list[Seg] = []
        synacks: dict[int, int] = {}

        def rule(
            seg: Seg,
            port: int = port,
            holding: threading.Event = holding,
            marked: set[int] = marked,
            held: list[Seg] = held,
            synacks: dict[int, int] = synacks,
        ) -> str:
            if seg.to_server and seg.dport == port:
                if seg.flags & SYN and holding.is_set():
                    marked.add(seg.sport)
                elif (
                    seg.sport in marked
                    and seg.pure_ack
                    and not any(h.sport == seg.sport for h in held)
                ):
                    held.append(seg)
                    return HOLD
            elif not seg.to_server and seg.sport == port and seg.flags & SYN:
                synacks[seg.dport] = synacks.get(seg.dport, 0) + 1
            return PASS

        relay.rule = rule
        clients = [connect(lab, port)]
        holding.set()
        clients += [connect(lab, port), connect(lab, port)]
        holding.clear()
        wait_until(lambda: len(held) >= 2, 2, 0.005)  # noqa: B023 (polled at once, in this pass)
        lab.expect(len(held) == 2, "the handshakes' final ACKs never came")
        # Released only now, so that both connect() calls returned before any reply.
        relay.release()
        lab.say("relay", "held the last two handshakes' final ACKs, released them together")
        time.sleep(0.05)
        row = lab.listen_row(port)
        lab.expect(row is not None, "listener vanished")
        assert row is not None
        lab.say("kernel", f"ss -lnt on server: LISTEN Recv-Q {row.recv_q} Send-Q {row.send_q}")
        lab.check(
            row.recv_q == 2 and row.send_q == 1, "accept queue at limit+1 (Recv-Q 2, Send-Q 1)"
        )
        late = clients[-1]
        late_port = late.getsockname()[1]
        if abort == 0:
            extra: list[tuple[float, BaseException | None]] = []

            def client4(
                port: int = port, extra: list[tuple[float, BaseException | None]] = extra
            ) -> None:
                c = lab.sock("client")
                c.settimeout(2.5)
                t0 = time.monotonic()
                try:
                    c.connect(lab.server_addr(port))
                    extra.append((time.monotonic() - t0, None))
                except OSError as err:
                    extra.append((time.monotonic() - t0, err))

            lab.say("client", "a fourth client connects (timeout 2.5s)")
            t = lab.spawn(client4, "client4")
            for c in clients:
                c.sendall(b"GET / HTTP/1.1\r\n\r\n")
            lab.say("client", "all three connected clients send a request (nobody will answer)")
            time.sleep(1.3)
            lab.ss("client", "clients think they are connected", port=port)
            lab.ss("server", "queued connections and the dropped handshake", port=port)
            t.join(timeout=4)
            lab.expect(extra, "the fourth connect() did not return")
            elapsed, exc = extra[0]
            lab.say(
                "client",
                f"fourth client: connect() → {describe_exc(exc) if exc else 'connected'} after {elapsed:.2f}s",
            )
            lab.check(exc is not None, "the fourth client's SYNs were dropped (connect timed out)")
            lab.check(
                synacks.get(late_port, 0) >= 2,
                "the server retransmitted the SYN-ACK to the overflowing client",
            )
            states = {r.state for s, r in lab.states if s == "server" and r.peer_port == late_port}
            lab.check(
                states == {"SYN-RECV"}, "the overflowing handshake sits in SYN-RECV on the server"
            )
        else:
            time.sleep(0.05)
            try:
                late.sendall(b"GET / HTTP/1.1\r\n\r\n")
            except OSError as err:
                outcome, exc = describe_exc(err), err
                lab.say("client", f"last client ({late_port}): its request write → {outcome}")
            else:
                outcome, exc = recv_outcome(late)
                lab.say("client", f"last client ({late_port}): request sent, read → {outcome}")
            lab.check(isinstance(exc, ConnectionResetError), "the overflowing client got a reset")
        overflows = lab.nstat("server", "TcpExtListenOverflows").get("TcpExtListenOverflows", 0)
        lab.say(
            "kernel", f"server TcpExtListenOverflows {overflows} (since the namespace was created)"
        )
        lab.check(overflows >= 1, "listen overflows counted")
        listener.close()
        lab.say("server", f"listener on {port} closed (queued connections are reset)")
        for c in clients:
            c.close()
        time.sleep(0.1)


FLOOD_NET = "198.18.0.0/15"  # the benchmarking range: addresses nobody in the lab owns


def spoofed_syn(src: bytes, dst: bytes, sport: int, dport: int, seq: int) -> bytes:
    """An IPv4 SYN as a flood tool writes it: MSS, SACK-permitted and window scale offered,
    no timestamps (the kernel fills in the IP checksum of a raw IP_HDRINCL packet)."""
    # MSS 1460, NOP, NOP, SACK-permitted, NOP, window scale 7: 12 bytes
    opts = struct.pack("!BBHBBBBBBBB", 2, 4, 1460, 1, 1, 4, 2, 1, 3, 3, 7)
    doff = (20 + len(opts)) // 4 << 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, doff, SYN, 64240, 0, 0) + opts
    tcp = (
        tcp[:16]
        + struct.pack("!H", transport_checksum(src, dst, socket.IPPROTO_TCP, tcp))
        + tcp[18:]
    )
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, socket.IPPROTO_TCP, 0, src, dst
    )
    return ip + tcp


def flood_source(i: int) -> str:
    return f"198.18.{i >> 8}.{i & 255}"


@scenario(
    "syn-flood",
    "spoofed SYNs from hundreds of addresses fill a listener's SYN queue; SYN cookies keep it answering",
    """
    A raw socket in the client namespace writes a few hundred SYNs to the server's
    port, each from another address of 198.18.0.0/15 (nobody there: the server's
    SYN-ACKs go unanswered), as a spoofing flood tool does. The listener has backlog
    8, so its SYN queue holds only a few half-open connections (SYN-RECV, the SYN-ACK
    retransmitted after 1 s; tcp_synack_retries=1 here). With tcp_syncookies=1 (set in
    the server's namespace only) every further SYN is answered with a SYN cookie: the
    kernel keeps no state, encodes the connection in the SYN-ACK's sequence number, and
    never retransmits that SYN-ACK. A cookie can hold window scale and SACK only inside
    a TCP timestamp, so the cookie SYN-ACKs to these SYNs (which offer both, without
    timestamps) carry just the MSS — visible on the wire. A legitimate client that
    connects during the flood gets a cookie too; its ACK is checked against the cookie
    and the connection is established as usual. Without cookies its SYNs would be
    dropped and connect() would time out (ETIMEDOUT). Counters:
    TcpExtSyncookiesSent, TcpExtSyncookiesRecv, TcpExtTCPReqQFullDoCookies.
    """,
    finds="syn-flood",
    shows="(warning: 200 spoofed SYNs, 191 answered with cookies; the real client got in)",
)
def syn_flood(lab: Lab) -> None:
    lab.expect(not lab.opts.ipv6, "syn-flood writes IPv4 packets (no -6)")
    n = lab.opts.count or 200
    backlog = 8
    lab.sysctl(
        "server",
        {
            "net.ipv4.tcp_syncookies": 1,
            "net.ipv4.tcp_synack_retries": 1,
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.s0.rp_filter": 0,
        },
    )
    lab.sysctl("client", {"net.ipv4.ip_forward": 0})
    nsmod.run(["ip", "route", "add", FLOOD_NET, "via", lab.client_ip], lab.server_ns)
    lab.say("lab", f"server namespace: route {FLOOD_NET} via the client's veth (replies die there)")
    listener = lab.listen(backlog=backlog)
    lab.say("server", f"listen(backlog={backlog}); accepts and answers every connection")
    served: list[str] = []

    def server() -> None:
        listener.settimeout(5)
        try:
            s, _ = listener.accept()
        except OSError as exc:
            served.append(describe_exc(exc))
            return
        lab._sockets.append(s)
        got = s.recv(4096)
        s.sendall(b"response\n")
        s.recv(4096)
        s.close()
        served.append(f"{len(got)} bytes")

    srv = lab.spawn(server, "server")
    raw = nsmod.socket_in(lab.client_ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    lab._sockets.append(raw)
    dst = socket.inet_aton(lab.server_ip)
    before = lab.nstat("server", "TcpExtSyncookiesSent").get("TcpExtSyncookiesSent", 0)
    outcome: list[tuple[float, BaseException | None]] = []
    done = threading.Event()

    def legit() -> None:
        c = lab.sock("client")
        c.settimeout(3)
        t0 = time.monotonic()
        try:
            c.connect(lab.server_addr())
            c.sendall(b"request\n")
            c.recv(4096)
        except OSError as exc:
            outcome.append((time.monotonic() - t0, exc))
        else:
            outcome.append((time.monotonic() - t0, None))
        done.wait(5)  # the connection stays open until the flood's SYN-ACKs have aged
        c.close()

    lab.say("attacker", f"writes {n} SYNs from {flood_source(1)} … {flood_source(n)} (raw socket)")
    t = None
    for i in range(1, n + 1):
        src = socket.inet_aton(flood_source(i))
        sport = 1024 + (i * 7919) % 60000
        seq = (i * 2654435761) & 0xFFFFFFFF
        raw.sendto(spoofed_syn(src, dst, sport, lab.opts.port, seq), (lab.server_ip, 0))
        if i == n // 2:
            lab.say("client", "a legitimate client connects during the flood (timeout 3 s)")
            t = lab.spawn(legit, "legit")
        time.sleep(0.001)
    assert t is not None
    wait_until(lambda: outcome, 5, 0.01)
    lab.expect(outcome, "the legitimate connect() did not return")
    elapsed, exc = outcome[0]
    lab.say(
        "client",
        f"connect(), request, response → {describe_exc(exc) if exc else 'ok'} after {elapsed:.2f}s",
    )
    lab.check(exc is None, "the legitimate client got in during the flood")
    rows = lab.wait_state("server", "SYN-RECV", timeout=0.5, count=backlog)
    lab.say("kernel", f"ss on server: {len(rows)} × SYN-RECV (the SYN queue; backlog {backlog})")
    lab.check(0 < len(rows) < n // 4, "only a few half-open connections kept (SYN-RECV)")
    time.sleep(2.2)  # the queued ones' SYN-ACKs are retransmitted after 1 s, cookies never
    done.set()
    lab.say("client", "closes its connection")
    t.join(timeout=2)
    srv.join(timeout=2)
    counters = lab.nstat(
        "server", "TcpExtSyncookiesSent", "TcpExtSyncookiesRecv", "TcpExtTCPReqQFullDoCookies"
    )
    lab.say("kernel", "server " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    sent = counters.get("TcpExtSyncookiesSent", 0) - before
    lab.check(sent >= n - len(rows) - 2, "every SYN beyond the queue answered with a cookie")
    lab.check(counters.get("TcpExtSyncookiesRecv", 0) >= 1, "the client's ACK validated a cookie")
    lab.check(served and served[0] == "8 bytes", "the server accepted and served the client")
    lab.stop_capture()
