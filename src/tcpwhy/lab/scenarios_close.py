"""Closing: the ways a connection ends (or does not) — a close() never called, TIME-WAIT
and its reuse, a reset instead of a FIN, FINs that cross, a lost last ACK, a peer that
never closes its half.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

from tcpwhy.decode.table import FIN
from tcpwhy.lab.env import Lab, SockRow, describe_exc
from tcpwhy.lab.relay import DROP, HOLD, PASS, RELEASE, Rule, Seg
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import (
    accept,
    close_first,
    exchange,
    local_addr,
    pair,
    recv_outcome,
    relay_of,
    serve_and_close,
    wait_until,
)


@scenario(
    "close-wait-leak",
    "the server never calls close() after the client's FIN: CLOSE-WAIT here, FIN-WAIT-2 there",
    """
    The client sends a request and closes. The server's kernel ACKs the client's
    FIN and moves the socket to CLOSE-WAIT; read() returns 0 to the application,
    which then forgets the socket without close(). CLOSE-WAIT has no timer: the
    socket (and its file descriptor) stays until the process closes it or exits,
    so a leak grows without bound and ends in "too many open files". The client's
    side waits in FIN-WAIT-2 (an orphan, limited by tcp_fin_timeout). On the wire
    there is exactly one FIN, from the client; the server's FIN never comes.
    """,
    finds="close-wait-leak",
)
def close_wait_leak(lab: Lab) -> None:
    n = lab.opts.count or 3
    listener = lab.listen()
    leaked: list[socket.socket] = []
    for _ in range(n):
        c, s = pair(lab, listener)
        exchange(lab, c, s)
        c.close()
        lab.say("client", "close()")
        outcome, _ = recv_outcome(s)
        lab.say("server", f"read → {outcome}; the handler returns without close()")
        leaked.append(s)
    lab.expect(
        len(lab.wait_state("server", "CLOSE-WAIT", count=n)) == n,
        "server sockets not in CLOSE-WAIT",
    )
    lab.expect(
        len(lab.wait_state("client", "FIN-WAIT-2", count=n)) == n,
        "client sockets not in FIN-WAIT-2",
    )
    time.sleep(0.1)
    lab.ss("server", "the leaked sockets")
    lab.ss("client", "the closed sockets")
    lab.check(
        [r.state for side, r in lab.states if side == "server"] == ["CLOSE-WAIT"] * n,
        f"{n} server sockets stuck in CLOSE-WAIT",
    )
    lab.stop_capture()  # the lab's own teardown would close the leaked sockets


@scenario(
    "time-wait",
    "a burst of short connections: the side that closes first keeps TIME-WAIT sockets for 60 s",
    """
    Each short connection ends with the client closing first, so the client's
    kernel keeps a TIME-WAIT socket for each one, for a fixed 60 seconds
    (TCP_TIMEWAIT_LEN; tcp_fin_timeout does not change it). TIME-WAIT protects a
    later connection on the same 4-tuple from delayed segments and lets the last
    ACK be repeated. A client that opens and closes many connections to the
    same server ties up one ephemeral port per TIME-WAIT socket; at a few hundred
    connections a second that exhausts the port range ("Cannot assign requested
    address"). Fix: reuse connections (keep-alive pools), tcp_tw_reuse for client
    hosts; never SO_LINGER 0 to "fix" it.
    """,
    finds="time-wait-accumulation",
    shows="(info)",
)
def time_wait(lab: Lab) -> None:
    n = lab.opts.count or 20
    listener = lab.listen()
    for _ in range(n):
        c = lab.sock("client")
        c.settimeout(5)
        c.connect(lab.server_addr())
        s, _ = listener.accept()
        c.sendall(b"GET\n")
        s.recv(100)
        s.sendall(b"200\n")
        c.recv(100)
        close_first(c, s)
    lab.say("client", f"{n} connections: request, response, client close(), server close()")
    rows = lab.wait_state("client", "TIME-WAIT", count=n)
    time.sleep(0.05)
    counts = lab.ss_summary("client", "after the burst")
    lab.ss_summary("server", "after the burst")
    lab.check(
        len(rows) == n and counts.get("TIME-WAIT") == n, f"{n} TIME-WAIT sockets on the client"
    )
    lab.check(
        not any(side == "server" and r.state == "TIME-WAIT" for side, r in lab.states),
        "no TIME-WAIT on the server (it closed second)",
    )


@scenario(
    "abortive-close",
    "close() with unread data sends RST instead of FIN; SO_LINGER {on, 0} does it on purpose",
    """
    Two connections. On the first the server closes with request bytes still
    unread in its receive buffer: the kernel discards them and sends RST instead
    of FIN (RFC 2525 2.17; counter TcpExtTCPAbortOnClose) — the client's read fails
    with "Connection reset by peer" even though the server meant a normal close.
    This is how an early 4xx reply to an unread upload turns into a reset. On
    the second the server sets SO_LINGER {on, 0} and closes: RST on purpose, no
    TIME-WAIT (counted as TcpExtTCPAbortOnData). Both RSTs are [R.] with the
    server's next sequence number, which tells them apart from RSTs answering a
    segment.
    """,
    finds="abortive-close",
    shows="(unread data and SO_LINGER 0, told apart)",
)
def abortive_close(lab: Lab) -> None:
    listener = lab.listen()
    before = lab.nstat("server", "TcpExtTCPAbortOnClose", "TcpExtTCPAbortOnData")
    c, s = pair(lab, listener)
    c.sendall(b"POST /upload\n" + b"x" * 1000)
    lab.say("client", "sent a request with a 1000-byte body")
    lab.expect_state("server", "ESTAB", "no server socket")
    wait_until(lambda: [r for r in lab.wait_state("server", "ESTAB") if r.recv_q > 0], 2, 0.01)
    lab.ss("server", "unread request bytes in Recv-Q")
    s.close()
    lab.say("server", "close() without reading the request")
    outcome, exc = recv_outcome(c)
    lab.say("client", f"read → {outcome}")
    lab.check(
        isinstance(exc, ConnectionResetError), "close() with unread data reset the connection"
    )

    c2, s2 = pair(lab, listener)
    exchange(lab, c2, s2)
    s2.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s2.close()
    lab.say("server", "SO_LINGER {on, 0}; close()")
    outcome, exc = recv_outcome(c2)
    lab.say("client", f"read → {outcome}")
    lab.check(isinstance(exc, ConnectionResetError), "linger-0 close reset the connection")
    after = lab.nstat("server", "TcpExtTCPAbortOnClose", "TcpExtTCPAbortOnData")
    d_close = after.get("TcpExtTCPAbortOnClose", 0) - before.get("TcpExtTCPAbortOnClose", 0)
    d_data = after.get("TcpExtTCPAbortOnData", 0) - before.get("TcpExtTCPAbortOnData", 0)
    lab.say("kernel", f"server TcpExtTCPAbortOnClose +{d_close}, TcpExtTCPAbortOnData +{d_data}")
    lab.check(d_close == 1 and d_data == 1, "one abort counted as AbortOnClose, one as AbortOnData")
    time.sleep(0.05)
    lab.ss("server", "after both aborts")
    lab.check(
        not any(side == "server" and r.state == "TIME-WAIT" for side, r in lab.states),
        "no TIME-WAIT after an abortive close",
    )


def _pair_closing_through(lab: Lab, rule: Rule) -> tuple[socket.socket, socket.socket]:
    """A (client, server) pair that has exchanged a request, the relay's `rule` in force for
    the close to come; the server's minimum RTO raised to 1 s so that `ss` can see the
    states a held or lost segment prolongs."""
    lab.rto_min("server", 1000)
    listener = lab.listen()
    c, s = pair(lab, listener)
    exchange(lab, c, s)
    relay_of(lab).rule = rule
    return c, s


def _close_in_turn(
    lab: Lab, first: str, closer: socket.socket, other: socket.socket, said: str
) -> None:
    """An orderly close told step by step: side `first` closes `closer` (told as `said`),
    the other side reads what that brings and closes `other`."""
    closer.close()
    lab.say(first, said)
    outcome, _ = recv_outcome(other)
    other.close()
    lab.say("server" if first == "client" else "client", f"read → {outcome}; close()")


@scenario(
    "simultaneous-close",
    "both sides close at once and the FINs cross: both pass through CLOSING",
    """
    Both applications call close() at the same moment. Each kernel sends its
    FIN from FIN-WAIT-1 and then receives the peer's FIN before the ACK of its
    own: a FIN that does not acknowledge ours moves the socket to CLOSING (RFC
    9293), where it waits for that ACK; then both go to TIME-WAIT — so both sides
    keep a TIME-WAIT socket. The relay holds the first FIN until the second one
    has left, and holds the two ACKs briefly so that `ss` can see CLOSING. Rare
    in practice (it needs both sides to time out together), harmless, but it
    puzzles whoever sees CLOSING or TIME-WAIT on both ends.
    """,
    relay=True,
    finds="simultaneous-close",
    shows="(info)",
)
def simultaneous_close(lab: Lab) -> None:
    fins: list[Seg] = []
    acks: list[Seg] = []

    def rule(seg: Seg) -> str:
        if seg.flags & FIN and len(fins) < 2:
            if fins and fins[0].to_server == seg.to_server:
                return HOLD  # a retransmission of the first FIN, not the second one
            fins.append(seg)
            return RELEASE if len(fins) == 2 else HOLD
        if len(fins) == 2 and seg.pure_ack and len(acks) < 2:
            acks.append(seg)
            return HOLD
        return PASS

    c, s = _pair_closing_through(lab, rule)
    c.close()
    s.close()
    lab.say("client", "close()")
    lab.say("server", "close() at the same time")
    wait_until(lambda: len(acks) >= 2, 2, 0.002)
    lab.expect(len(fins) == 2, "the two FINs did not both reach the relay")
    lab.say("relay", f"FINs crossed: {fins[0].describe()} / {fins[1].describe()}")
    lab.expect(len(acks) == 2, "the ACKs of the crossed FINs did not come")
    cl = lab.ss("client", "the FINs have crossed, ACKs still in flight")
    sv = lab.ss("server", "the FINs have crossed, ACKs still in flight")
    relay_of(lab).release()
    lab.say("relay", "ACKs released")
    lab.check(
        [r.state for r in cl] == ["CLOSING"] and [r.state for r in sv] == ["CLOSING"],
        "both sockets in CLOSING",
    )
    lab.expect_state("client", "TIME-WAIT", "client never reached TIME-WAIT", timeout=2)
    lab.expect_state("server", "TIME-WAIT", "server never reached TIME-WAIT", timeout=2)
    cl = lab.ss("client", "after the ACKs")
    sv = lab.ss("server", "after the ACKs")
    lab.check(
        [r.state for r in cl] == ["TIME-WAIT"] and [r.state for r in sv] == ["TIME-WAIT"],
        "both sides in TIME-WAIT",
    )


@scenario(
    "lost-final-ack",
    "the last ACK of the close is lost once: FIN retransmitted from LAST-ACK, re-ACKed from TIME-WAIT",
    """
    The client closes first; the server reads EOF and closes, its socket in
    LAST-ACK. The client's final ACK (sent from TIME-WAIT) is lost once on the
    path. The server's FIN retransmission timer fires (RTO, at least 200 ms; the
    lab raises the server's minimum to 1 s so that the wait can be seen) and it
    sends the FIN again; the client, still in TIME-WAIT, acknowledges it again
    — this is the reason TIME-WAIT exists — and the server's socket finally goes
    away. Without TIME-WAIT the retransmitted FIN would meet no socket and draw
    an RST.
    """,
    relay=True,
    finds="lost-final-ack",
    shows="(info)",
)
def lost_final_ack(lab: Lab) -> None:
    server_fins: list[Seg] = []
    dropped: list[Seg] = []

    def rule(seg: Seg) -> str:
        if not seg.to_server and seg.flags & FIN:
            server_fins.append(seg)
        elif seg.to_server and seg.pure_ack and server_fins and not dropped:
            dropped.append(seg)
            return DROP
        return PASS

    c, s = _pair_closing_through(lab, rule)
    _close_in_turn(lab, "client", c, s, "close()")
    wait_until(lambda: dropped, 2, 0.002)
    lab.expect(dropped, "the client's final ACK never came")
    lab.say("relay", f"dropped the final ACK once: {dropped[0].describe()}")
    time.sleep(0.02)
    cl = lab.ss("client", "final ACK sent")
    sv = lab.ss("server", "final ACK lost")
    lab.check([r.state for r in sv] == ["LAST-ACK"], "server waits in LAST-ACK")
    lab.check([r.state for r in cl] == ["TIME-WAIT"], "client in TIME-WAIT")
    wait_until(lambda: len(server_fins) >= 2, 3, 0.01)
    lab.check(len(server_fins) >= 2, "the server retransmitted its FIN")
    lab.say("relay", f"FIN retransmitted: {server_fins[1].describe()}")
    wait_until(lambda: not lab.wait_state("server", "LAST-ACK", timeout=0), 2, 0.02)
    sv = lab.ss("server", "after the FIN retransmission")
    lab.ss("client", "after the FIN retransmission")
    lab.check(not sv, "the repeated ACK from TIME-WAIT ended the server's socket")


@scenario(
    "fin-wait-2",
    "the passive side never closes: an orphaned FIN-WAIT-2 ends after tcp_fin_timeout, a half-closed one does not",
    """
    The client ends two connections while the server never closes either. A:
    close() — the socket is orphaned (no process holds it) and waits in FIN-WAIT-2
    only tcp_fin_timeout seconds (shortened here in the client's namespace), then
    disappears without sending anything. B: shutdown(SHUT_WR) — the process
    still owns the socket, so FIN-WAIT-2 has no timeout at all. When the server
    finally closes A, its FIN meets no socket and is answered with RST; its FIN
    on B is acknowledged normally and the client reads EOF. Many FIN-WAIT-2
    sockets point at a peer that does not close (see close-wait-leak for the
    other end); tcp_fin_timeout bounds only the orphans.
    """,
    finds="fin-wait-2-stall",
)
def fin_wait_2(lab: Lab) -> None:
    fin_timeout = max(1, round(lab.opts.timeout or 2))
    lab.sysctl("client", {"net.ipv4.tcp_fin_timeout": fin_timeout})
    listener = lab.listen()
    a_c, a_s = pair(lab, listener)
    exchange(lab, a_c, a_s)
    b_c, b_s = pair(lab, listener)
    exchange(lab, b_c, b_s)
    a_port, b_port = a_c.getsockname()[1], b_c.getsockname()[1]
    a_c.close()
    lab.say("client", f"connection A (port {a_port}): close() — the socket is now an orphan")
    b_c.shutdown(socket.SHUT_WR)
    lab.say(
        "client", f"connection B (port {b_port}): shutdown(SHUT_WR) — still held by the process"
    )
    for name, s in (("A", a_s), ("B", b_s)):
        outcome, _ = recv_outcome(s)
        lab.say("server", f"connection {name}: read → {outcome}; keeps the socket open")
    lab.expect(
        len(lab.wait_state("client", "FIN-WAIT-2", count=2)) == 2,
        "client sockets not in FIN-WAIT-2",
    )
    rows = lab.ss("client", "both half-closed")
    lab.check(
        len(rows) == 2 and all(r.state == "FIN-WAIT-2" for r in rows),
        "both client sockets in FIN-WAIT-2",
    )
    lab.say("lab", f"waiting {fin_timeout + 0.7:g}s (tcp_fin_timeout={fin_timeout})")
    time.sleep(fin_timeout + 0.7)
    rows = lab.ss("client", f"after tcp_fin_timeout={fin_timeout}s")
    lab.check(
        [r.local_port for r in rows] == [b_port] and rows[0].state == "FIN-WAIT-2",
        "the orphan expired, the half-closed socket is still in FIN-WAIT-2",
    )
    rsts = lab.nstat("client", "TcpOutRsts").get("TcpOutRsts", 0)
    a_s.close()
    lab.say("server", "connection A: close() at last")
    b_s.close()
    lab.say("server", "connection B: close() at last")
    outcome, _ = recv_outcome(b_c)
    lab.say("client", f"connection B: read → {outcome}")
    lab.check(outcome.startswith("EOF"), "the half-closed connection ended with EOF")
    time.sleep(0.05)
    rsts = lab.nstat("client", "TcpOutRsts").get("TcpOutRsts", 0) - rsts
    lab.say("kernel", f"client TcpOutRsts +{rsts}")
    lab.check(rsts == 1, "the server's late FIN on A was answered with RST")
    rows = lab.ss("client", "after the server's FINs")
    lab.check([r.state for r in rows] == ["TIME-WAIT"], "B ended in TIME-WAIT")


def _bound_client(lab: Lab, port: int = 0) -> socket.socket:
    """A client socket with SO_REUSEADDR, bound to `port` (0: the kernel picks one)."""
    c = lab.sock("client")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.settimeout(5)
    c.bind((lab.client_ip, port))
    return c


def _reconnect(
    lab: Lab, listener: socket.socket, cport: int, said: str, accepted: str
) -> tuple[socket.socket, socket.socket]:
    """A new connection from the client's bound port `cport` (the story tells it as `said`),
    checked to reach the server from that port: the client's and the server's socket."""
    c = _bound_client(lab, cport)
    c.connect(lab.server_addr())
    lab.say("client", said)
    s, peer = accept(lab, listener)
    lab.check(peer[1] == cport, accepted)
    return c, s


def _rows_for(rows: list[SockRow], cport: int) -> list[str]:
    return [r.state for r in rows if cport in (r.local_port, r.peer_port)]


@scenario(
    "time-wait-reuse",
    "a client reconnects from the same source port within 60 s: the SYN meets TIME-WAIT and is accepted",
    """
    A client that binds a fixed source port (SO_REUSEADDR) reconnects to the same
    server port: the new SYN uses the 4-tuple of a connection that ended less than
    60 s ago, and the side that closed first still holds it in TIME-WAIT. A: the
    server closed first, so the SYN reaches the server's TIME-WAIT socket. Linux
    accepts it as a new connection because its sequence number (or timestamp) is
    newer than anything the old connection used: the TIME-WAIT socket is dropped
    and the SYN-ACK's ISN is the old connection's next sequence number + 65537, so
    that delayed old segments cannot fall into the new window. B: the client closed
    first and holds the TIME-WAIT itself; a connect() from the bound port takes it
    over at once (TCP timestamps on), its SYN again with ISN = old next sequence +
    65537. C: an unbound connect() whose only free ephemeral port is held by the
    client's TIME-WAIT fails with "Cannot assign requested address" (EADDRNOTAVAIL)
    until net.ipv4.tcp_tw_reuse=1 lets it take that port (after
    tcp_tw_reuse_delay, shortened here). Reuse is harmless when the SYN is
    accepted; it hurts when it is not — a SYN older than the TIME-WAIT's state
    draws a bare ACK (then RST and a one-second retry), or is silently dropped by
    PAWS or a NAT.
    """,
    finds="time-wait-reuse",
    shows="(info: all three reuses accepted)",
)
def time_wait_reuse(lab: Lab) -> None:
    pause = lab.opts.delay if lab.opts.delay is not None else 0.3
    lab.expect(pause < 55, "--delay must be well below the 60 s of TIME-WAIT")
    listener = lab.listen()

    # A: the server closes first and keeps the TIME-WAIT.
    c1 = _bound_client(lab)
    cport = c1.getsockname()[1]
    c1.connect(lab.server_addr())
    lab.say("client", f"bind(SO_REUSEADDR) + connect() → established from port {cport}")
    s1, _ = accept(lab, listener)
    exchange(lab, c1, s1)
    _close_in_turn(lab, "server", s1, c1, "close() first (like Connection: close)")
    lab.expect_state("server", "TIME-WAIT", "server never reached TIME-WAIT", timeout=2)
    time.sleep(0.05)
    sv = lab.ss("server", "before the second SYN")
    cl = lab.ss("client", "before the second SYN")
    lab.check(
        _rows_for(sv, cport) == ["TIME-WAIT"] and not _rows_for(cl, cport),
        f"the 4-tuple (client port {cport}) in TIME-WAIT on the server, gone on the client",
    )
    time.sleep(pause)
    c2, s2 = _reconnect(
        lab,
        listener,
        cport,
        f"{pause:g}s later: bind({cport}, SO_REUSEADDR) + connect() → established",
        "the server accepted a new connection on the same 4-tuple",
    )
    sv = lab.ss("server", "after the SYN met its TIME-WAIT socket")
    lab.check(
        _rows_for(sv, cport) == ["ESTAB"], "the TIME-WAIT socket gave way to the new connection"
    )
    exchange(lab, c2, s2)

    # B: the client closes first and keeps the TIME-WAIT itself.
    _close_in_turn(lab, "client", c2, s2, "close() first")
    lab.expect_state("client", "TIME-WAIT", "client never reached TIME-WAIT", timeout=2)
    time.sleep(0.05)
    cl = lab.ss("client", "after the client closed first")
    lab.check(_rows_for(cl, cport) == ["TIME-WAIT"], "the client holds the TIME-WAIT now")
    time.sleep(pause)
    c3, s3 = _reconnect(
        lab,
        listener,
        cport,
        f"bind({cport}, SO_REUSEADDR) + connect() → established",
        "the client took over its own TIME-WAIT (explicit bind)",
    )
    exchange(lab, c3, s3)
    close_first(c3, s3)
    lab.say("client", "close() first again; the server closes too")
    lab.expect_state("client", "TIME-WAIT", "client never reached TIME-WAIT", timeout=2)

    # C: unbound connect()s whose only ephemeral port is in TIME-WAIT: tcp_tw_reuse. (A port
    # bound by bind() is never shared with connect()'s port choice, so C has its own port.)
    eport = next(p for p in (cport + 1, cport - 1, cport + 2) if p != lab.opts.port and p < 65536)
    lab.sysctl(
        "client",
        {"net.ipv4.ip_local_port_range": f"{eport} {eport}", "net.ipv4.tcp_tw_reuse": 0},
    )
    port = _unbound_connect_and_talk(lab, listener)
    lab.expect(port == eport, "connect() did not use the only ephemeral port")
    lab.say("client", "close() first; the server closes too")
    lab.expect(
        len(lab.wait_state("client", "TIME-WAIT", timeout=2, count=2)) == 2,
        "client never reached TIME-WAIT on the ephemeral port",
    )
    blocked = lab.sock("client")
    blocked.settimeout(5)
    try:
        blocked.connect(lab.server_addr())
        lab._sockets.append(listener.accept()[0])
    except OSError as exc:
        lab.say("client", f"connect() without bind → {describe_exc(exc)}")
        lab.check(
            exc.errno == errno.EADDRNOTAVAIL,
            "no ephemeral port: the only one is held by the client's TIME-WAIT",
        )
    else:
        lab.expect(False, "connect() took a port in TIME-WAIT with tcp_tw_reuse=0")
    blocked.close()
    delay_ms = 200
    lab.sysctl("client", {"net.ipv4.tcp_tw_reuse": 1, "net.ipv4.tcp_tw_reuse_delay": delay_ms})
    time.sleep(delay_ms / 1000 + 0.1)
    port = _unbound_connect_and_talk(lab, listener)
    lab.check(port == eport, "tcp_tw_reuse let connect() take the port in TIME-WAIT")
    lab.say("client", "close(); the server closes too")
    lab.wait_state("client", "TIME-WAIT", timeout=2)


def _unbound_connect_and_talk(lab: Lab, listener: socket.socket) -> int:
    """connect() without bind(), one exchange, the client closes first: the port it got."""
    c = lab.sock("client")
    c.settimeout(5)
    c.connect(lab.server_addr())
    lab.say("client", f"connect() without bind → established from {local_addr(c)}")
    return serve_and_close(lab, listener, c, server_first=False)
