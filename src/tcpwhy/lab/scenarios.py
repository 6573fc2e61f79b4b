"""The scenarios: each plays one incident with real sockets and checks what the kernel did.

Every scenario checks at run time what the applications saw (exceptions,
EOF) and what `ss` showed; the tests check the recorded packets separately,
so that a scenario that "passes" for the wrong reason is caught by one of
the two.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

from tcpwhy.decode.table import FIN, SYN
from tcpwhy.lab.env import Lab, SockRow, describe_exc
from tcpwhy.lab.http import STALE_ERRORS, KeepAliveServer, Pool
from tcpwhy.lab.packets import transport_checksum
from tcpwhy.lab.relay import DROP, HOLD, PASS, PASS_RELEASE, RELEASE, Seg
from tcpwhy.lab.runner import scenario

# ------------------------------------------------------------------------------------------
# Keep-alive reuse


@scenario(
    "stale-keepalive",
    "pooled keep-alive connection reused after the server closed it: RST, retry succeeds",
    """
    The server closes a keep-alive connection that stayed idle longer than its
    timeout (like nginx's keepalive_timeout): FIN to the client, whose kernel
    ACKs it at once and parks the socket in CLOSE-WAIT — the pool does not notice,
    because nobody reads an idle pooled socket. When the pool reuses that socket
    the request is sent to a server socket that no longer exists for reading (an
    orphaned FIN-WAIT-2 socket, or nothing at all), and the server's kernel
    answers with RST. The client application sees EOF before any response
    (http.client's RemoteDisconnected), or "Broken pipe" when it writes again
    after the RST: an RST reaching a socket in CLOSE-WAIT is reported as EPIPE, not
    ECONNRESET. A retry on a fresh connection succeeds. Fix: a client idle timeout
    shorter than every server idle timeout on the path, and a retry for
    idempotent requests.
    """,
    finds="stale-keepalive-reuse",
    shows="(+ request-retried, info)",
)
def stale_keepalive(lab: Lab) -> None:
    idle = lab.opts.idle if lab.opts.idle is not None else 1.0
    server = KeepAliveServer(lab, idle)
    pool = Pool(lab, body_pause=lab.opts.delay)
    lab.check(pool.request("/first") == 200, "first request answered")
    lab.say("client", f"connection back in the pool, idle (server idle timeout {idle:g}s)")
    lab.expect(
        lab.wait_state("client", "CLOSE-WAIT", timeout=idle + 3),
        "client socket never reached CLOSE-WAIT",
    )
    time.sleep(0.2)
    lab.ss("client", "pooled socket after the server's idle close")
    lab.ss("server", "the closed connection")
    rsts_before = lab.nstat("server", "TcpOutRsts").get("TcpOutRsts", 0)
    status = pool.request("/second")
    lab.check(status == 200, "retry on a new connection answered")
    lab.check(
        len(pool.errors) == 1 and isinstance(pool.errors[0], STALE_ERRORS),
        "the reused connection failed (EOF, Broken pipe or reset)",
    )
    rsts = lab.nstat("server", "TcpOutRsts").get("TcpOutRsts", 0) - rsts_before
    lab.say("kernel", f"server TcpOutRsts +{rsts}")
    lab.check(rsts >= 1, "the server's kernel sent an RST")
    lab.check(server.closed_idle == 1, "the server closed exactly one idle connection")
    pool.close()
    lab.wait_state("client", "TIME-WAIT", timeout=2)
    server.stop()


@scenario(
    "clean",
    "ordinary short and keep-alive HTTP traffic that ends properly (a baseline with no finding)",
    """
    One short request with "Connection: close" (the server closes first and keeps
    the TIME-WAIT), then three requests on one keep-alive connection that the
    client closes well before the server's idle timeout (the client keeps the
    TIME-WAIT). Every connection ends with FIN, ACK, FIN, ACK and no RST. TIME-WAIT
    on the side that closed first is the normal end of a TCP connection, not a
    problem; this scenario is the baseline that a diagnosis must leave silent.
    """,
    finds=None,
)
def clean(lab: Lab) -> None:
    server = KeepAliveServer(lab, idle=5.0)
    pool = Pool(lab)
    lab.check(pool.request("/short", close=True) == 200, "short request answered")
    for i in range(lab.opts.count or 3):
        lab.expect(pool.request(f"/keepalive/{i}") == 200, "keep-alive request failed")
    lab.check(
        pool.connections == 2, "two connections, the second reused for every keep-alive request"
    )
    pool.close()
    lab.expect(lab.wait_state("client", "TIME-WAIT", timeout=2), "client never reached TIME-WAIT")
    lab.expect(lab.wait_state("server", "TIME-WAIT", timeout=2), "server never reached TIME-WAIT")
    time.sleep(0.1)
    lab.ss("client", "after both connections ended")
    lab.ss("server", "after both connections ended")
    lab.check(not pool.errors, "no request failed")
    server.stop()


# ------------------------------------------------------------------------------------------
# Helpers


def _peer(s: socket.socket) -> str:
    host, port = s.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(lab: Lab, port: int | None = None, timeout: float | None = 5.0) -> socket.socket:
    c = lab.sock("client")
    c.settimeout(timeout)
    c.connect(lab.server_addr(port))
    lab.say("client", f"connect() → established from {_peer(c)}")
    return c


def pair(
    lab: Lab, listener: socket.socket, port: int | None = None
) -> tuple[socket.socket, socket.socket]:
    """A connected (client, server) pair: the handshake completes before accept() returns."""
    c = connect(lab, port)
    s, _ = listener.accept()
    lab._sockets.append(s)
    return c, s


def exchange(lab: Lab, c: socket.socket, s: socket.socket, what: str = "request") -> None:
    c.sendall(f"{what}\n".encode())
    got = s.recv(4096)
    s.sendall(b"response\n")
    c.recv(4096)
    lab.say("client", f"sent a {what} ({len(got)} bytes), got the response")


def recv_outcome(sock: socket.socket) -> tuple[str, BaseException | None]:
    """What a blocking read reports: 'data', 'EOF' or the exception."""
    try:
        data = sock.recv(65536)
    except OSError as exc:
        return describe_exc(exc), exc
    return ("EOF (recv returned 0 bytes)" if not data else f"{len(data)} bytes"), None


def drop_rule(port: int, what: str, hook: str = "input", extra: str = "") -> str:
    """An nft ruleset in its own table (removed with `delete table`) with a counter."""
    return (
        f"table inet tcpwhy_lab {{\n  chain {hook} {{\n    type filter hook {hook} priority -300;\n"
        f"    tcp {what} {port} {extra} counter drop\n  }}\n}}\n"
    )


def nft_dropped(lab: Lab, side: str) -> int:
    from tcpwhy.lab import ns as nsmod

    out = nsmod.run(["nft", "list", "table", "inet", "tcpwhy_lab"], lab.ns_of(side))
    return sum(int(tok.split()[0]) for tok in out.split("packets ")[1:])


def _flags(seg: Seg) -> int:
    return seg.flags


# ------------------------------------------------------------------------------------------
# Close lifecycle


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
        c.close()
        recv_outcome(s)
        s.close()
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
    lab.expect(lab.wait_state("server", "ESTAB"), "no server socket")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        rows = [r for r in lab.wait_state("server", "ESTAB") if r.recv_q > 0]
        if rows:
            break
        time.sleep(0.01)
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


# ------------------------------------------------------------------------------------------
# Scenarios that need the impairment relay


@scenario(
    "keepalive-race",
    "the pooled request leaves while the server's idle-close FIN is in flight: they cross",
    """
    Like stale-keepalive, but the client reuses the connection at the worst
    moment: its request leaves before the server's FIN has arrived, so the two
    cross on the path. The request's ACK field does not cover the FIN (the client
    had not seen it), which tells this race apart from plain stale reuse, where
    the request acknowledges a FIN received long before. The server's socket is
    already closed for reading, so its kernel answers the request with RST; the
    client gets EOF or a reset and its pool must retry. The relay holds the
    server's FIN until the request has passed it. No client idle timeout can
    close this window completely; retries of idempotent requests (or the server
    sending "Connection: close" on the last response) do.
    """,
    relay=True,
    finds="keepalive-race",
    shows="(+ request-retried)",
)
def keepalive_race(lab: Lab) -> None:
    assert lab.relay is not None
    relay = lab.relay
    idle = lab.opts.idle if lab.opts.idle is not None else 1.0
    fin: list[Seg] = []
    crossed: list[Seg] = []

    def rule(seg: Seg) -> str:
        if not seg.to_server and seg.flags & FIN and not crossed:
            # its retransmissions too: the server's RTO (200 ms) can fire while ss runs
            fin.append(seg)
            return HOLD
        if seg.to_server and seg.payload_len and fin and not crossed:
            crossed.append(seg)
            return PASS_RELEASE
        return PASS

    server = KeepAliveServer(lab, idle)
    pool = Pool(lab)
    lab.check(pool.request("/first") == 200, "first request answered")
    relay.rule = rule
    deadline = time.monotonic() + idle + 3
    while not fin and time.monotonic() < deadline:
        time.sleep(0.005)
    lab.expect(fin, "the server never sent its idle-close FIN")
    lab.say("relay", f"holding the server's FIN in flight: {fin[0].describe()}")
    lab.ss("client", "the FIN has not arrived")
    lab.ss("server", "after its idle close")
    status = pool.request("/second")
    lab.expect(crossed, "the request never reached the relay")
    lab.say("relay", f"request passed the FIN: {crossed[0].describe()}; FIN released")
    lab.check(
        crossed[0].ack == fin[0].seq,
        "the request does not acknowledge the server's FIN (they crossed)",
    )
    lab.check(len(pool.errors) == 1, "the reused connection failed")
    lab.check(status == 200, "retry on a new connection answered")
    pool.close()
    lab.wait_state("client", "TIME-WAIT", timeout=2)
    server.stop()


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
    assert lab.relay is not None
    relay = lab.relay
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

    lab.rto_min("server", 1000)
    listener = lab.listen()
    c, s = pair(lab, listener)
    exchange(lab, c, s)
    relay.rule = rule
    c.close()
    s.close()
    lab.say("client", "close()")
    lab.say("server", "close() at the same time")
    deadline = time.monotonic() + 2
    while len(acks) < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    lab.expect(len(fins) == 2, "the two FINs did not both reach the relay")
    lab.say("relay", f"FINs crossed: {fins[0].describe()} / {fins[1].describe()}")
    lab.expect(len(acks) == 2, "the ACKs of the crossed FINs did not come")
    cl = lab.ss("client", "the FINs have crossed, ACKs still in flight")
    sv = lab.ss("server", "the FINs have crossed, ACKs still in flight")
    relay.release()
    lab.say("relay", "ACKs released")
    lab.check(
        [r.state for r in cl] == ["CLOSING"] and [r.state for r in sv] == ["CLOSING"],
        "both sockets in CLOSING",
    )
    lab.expect(lab.wait_state("client", "TIME-WAIT", timeout=2), "client never reached TIME-WAIT")
    lab.expect(lab.wait_state("server", "TIME-WAIT", timeout=2), "server never reached TIME-WAIT")
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
    assert lab.relay is not None
    relay = lab.relay
    server_fins: list[Seg] = []
    dropped: list[Seg] = []

    def rule(seg: Seg) -> str:
        if not seg.to_server and seg.flags & FIN:
            server_fins.append(seg)
        elif seg.to_server and seg.pure_ack and server_fins and not dropped:
            dropped.append(seg)
            return DROP
        return PASS

    listener = lab.listen()
    c, s = pair(lab, listener)
    exchange(lab, c, s)
    relay.rule = rule
    c.close()
    lab.say("client", "close()")
    outcome, _ = recv_outcome(s)
    s.close()
    lab.say("server", f"read → {outcome}; close()")
    deadline = time.monotonic() + 2
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.002)
    lab.expect(dropped, "the client's final ACK never came")
    lab.say("relay", f"dropped the final ACK once: {dropped[0].describe()}")
    time.sleep(0.02)
    cl = lab.ss("client", "final ACK sent")
    sv = lab.ss("server", "final ACK lost")
    lab.check([r.state for r in sv] == ["LAST-ACK"], "server waits in LAST-ACK")
    lab.check([r.state for r in cl] == ["TIME-WAIT"], "client in TIME-WAIT")
    deadline = time.monotonic() + 3
    while len(server_fins) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    lab.check(len(server_fins) >= 2, "the server retransmitted its FIN")
    lab.say("relay", f"FIN retransmitted: {server_fins[1].describe()}")
    deadline = time.monotonic() + 2
    while lab.wait_state("server", "LAST-ACK", timeout=0) and time.monotonic() < deadline:
        time.sleep(0.02)
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
    assert lab.relay is not None
    relay = lab.relay
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
        deadline = time.monotonic() + 2
        while len(held) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
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


# ------------------------------------------------------------------------------------------
# Stalls and dead peers


@scenario(
    "zero-window",
    "a receiver that stops reading: window shrinks to zero, zero-window probes, recovery when it reads",
    """
    The server's application stops reading (a stuck consumer, a full downstream).
    Its receive buffer fills and its kernel advertises a shrinking window, then
    zero. The client's kernel stops sending and its persist timer sends
    zero-window probes with exponential backoff (on Linux a 0-byte segment with
    seq = next-1, which Wireshark labels "TCP Keep-Alive"); each is answered
    with window 0. The connection is healthy, only stalled: `ss` shows Recv-Q
    full on the receiver and Send-Q with a persist timer on the sender. When the
    application reads again, a window update restarts the transfer.
    """,
    finds="zero-window-stall",
)
def zero_window(lab: Lab) -> None:
    total = (lab.opts.count or 64) * 1024
    stall = lab.opts.delay if lab.opts.delay is not None else 2.0
    listener = lab.sock("server")
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(lab.server_addr())
    listener.listen(8)
    c, s = pair(lab, listener)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # so that sendall() blocks
    before = lab.nstat("client", "TcpExtTCPWinProbe").get("TcpExtTCPWinProbe", 0)
    sent: list[int] = []

    def client() -> None:
        c.settimeout(stall + 10)
        c.sendall(b"z" * total)
        sent.append(total)

    lab.say("server", "stops reading (SO_RCVBUF 4096)")
    lab.say("client", "SO_SNDBUF 4096")
    lab.say("client", f"sendall() of {total} bytes")
    lab.spawn(client, "sender")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any("persist" in r.extra for r in _ss_quiet(lab, "client")):
            break
        time.sleep(0.02)
    time.sleep(stall)
    cl = lab.ss("client", "sender stalled")
    sv = lab.ss("server", "receiver not reading")
    lab.check(
        cl and "persist" in cl[0].extra and cl[0].send_q > 0,
        "sender's persist timer running, data queued",
    )
    lab.check(sv and sv[0].recv_q > 0, "receiver's Recv-Q full")
    probes = lab.nstat("client", "TcpExtTCPWinProbe").get("TcpExtTCPWinProbe", 0) - before
    lab.say("kernel", f"client TcpExtTCPWinProbe +{probes}")
    lab.check(probes >= 2, "zero-window probes sent")
    lab.check(not sent, "sendall() still blocked")
    got = 0
    s.settimeout(10)
    while got < total:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    lab.say("server", f"reads again: {got} bytes")
    deadline = time.monotonic() + 3
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    lab.check(sent and got == total, "transfer completed after the window reopened")
    c.close()
    outcome, _ = recv_outcome(s)
    s.close()
    lab.say("server", f"read → {outcome}; close()")
    lab.wait_state("client", "TIME-WAIT", timeout=2)


def _ss_quiet(lab: Lab, side: str) -> list[SockRow]:
    from tcpwhy.lab import ns as nsmod

    rows = []
    for line in nsmod.run(["ss", "-Htano"], lab.ns_of(side)).splitlines():
        p = line.split()
        if len(p) >= 5 and p[0] != "LISTEN":
            rows.append(SockRow(p[0], int(p[1]), int(p[2]), p[3], p[4], " ".join(p[5:])))
    return rows


@scenario(
    "half-open",
    "the server lost the connection without the client knowing: the client's next segment draws RST",
    """
    The server's side of an idle connection disappears without a FIN or RST
    reaching the client — a crash, reboot, failover, or a middlebox that dropped
    its state. Here the server aborts the connection while an nft rule in its
    namespace drops the RST it sends, so the client keeps an ESTABLISHED socket
    to nothing. Nothing happens until the client sends: the server's kernel has
    no socket for the segment and answers with RST, and the client's read fails
    with "Connection reset by peer". An idle client would never notice without
    TCP keepalive or an application ping.
    """,
    finds="half-open-reset",
)
def half_open(lab: Lab) -> None:
    port = lab.opts.port
    listener = lab.listen()
    c, s = pair(lab, listener)
    exchange(lab, c, s)
    lab.nft(
        "server",
        drop_rule(port, "sport", hook="output", extra="tcp flags & rst == rst"),
        "drop outgoing RSTs (the server's reset never arrives)",
    )
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    lab.say("server", "loses the connection (abortive close; its RST is lost)")
    lab.check(nft_dropped(lab, "server") == 1, "the server's RST was dropped")
    from tcpwhy.lab import ns as nsmod

    nsmod.run(["nft", "delete", "table", "inet", "tcpwhy_lab"], lab.server_ns)
    lab.say("lab", "server namespace nft: rule removed")
    cl = lab.ss("client", "half-open")
    sv = lab.ss("server", "half-open")
    lab.check(
        [r.state for r in cl] == ["ESTAB"] and not sv, "client ESTABLISHED, server has no socket"
    )
    c.sendall(b"next request\n")
    lab.say("client", "sends the next request on the connection")
    outcome, exc = recv_outcome(c)
    lab.say("client", f"read → {outcome}")
    lab.check(isinstance(exc, ConnectionResetError), "the client's segment was answered with RST")


@scenario(
    "keepalive-dead-peer",
    "SO_KEEPALIVE with short timers while the peer has vanished: unanswered probes, then ETIMEDOUT",
    """
    The client enables SO_KEEPALIVE with short timers (TCP_KEEPIDLE,
    TCP_KEEPINTVL, TCP_KEEPCNT; the system defaults are 2 h, 75 s and 9 probes)
    and waits for data on an idle connection. Then the server host vanishes (an
    nft rule in its namespace drops everything it receives). After the idle time
    the client's kernel sends keepalive probes — 0-byte segments with seq =
    next-1 — that nobody answers; after TCP_KEEPCNT of them it gives up, sends a
    RST into the void and the blocked read fails with ETIMEDOUT ("Connection
    timed out"). Without keepalive the read would wait forever.
    """,
    finds="keepalive-dead-peer",
)
def keepalive_dead_peer(lab: Lab) -> None:
    idle = max(1, round(lab.opts.idle or 1))
    cnt = lab.opts.count or 3
    intvl = 1
    listener = lab.listen()
    c, s = pair(lab, listener)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)
    lab.say(
        "client", f"SO_KEEPALIVE, TCP_KEEPIDLE={idle}, TCP_KEEPINTVL={intvl}, TCP_KEEPCNT={cnt}"
    )
    exchange(lab, c, s)
    lab.nft(
        "server", drop_rule(lab.opts.port, "dport"), "drop everything arriving (the host vanished)"
    )
    result: list[tuple[float, BaseException | None]] = []

    def reader() -> None:
        c.settimeout(None)
        t0 = time.monotonic()
        _, exc = recv_outcome(c)
        result.append((time.monotonic() - t0, exc))

    lab.say("client", "waits for data (blocking read, no timeout of its own)")
    t = lab.spawn(reader, "reader")
    time.sleep(idle + intvl + 0.5)
    rows = lab.ss("client", "probing")
    lab.check(rows and "keepalive" in rows[0].extra, "keepalive timer running")
    t.join(timeout=idle + intvl * cnt + 5)
    lab.expect(result, "the read never returned")
    elapsed, exc = result[0]
    lab.say("client", f"read → {describe_exc(exc) if exc else 'data'} after {elapsed:.2f}s")
    lab.check(
        isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, "the read failed with ETIMEDOUT"
    )
    dropped = nft_dropped(lab, "server")
    lab.say("kernel", f"server nft counter: {dropped} packets dropped")
    lab.check(dropped >= cnt, f"{cnt} probes went unanswered")


@scenario(
    "retransmission-timeout",
    "the path goes black mid-transfer: retransmissions with backoff until TCP_USER_TIMEOUT gives up",
    """
    After a normal request/response the path to the server goes black (an nft
    rule in the server's namespace drops everything from now on). The client's
    next request is never acknowledged: its kernel retransmits it with
    exponential backoff (RTO at least 200 ms, doubling each time) — with the
    defaults it would keep trying for about 15 minutes (tcp_retries2=15). Here
    TCP_USER_TIMEOUT caps it; when it expires the socket is closed with
    ETIMEDOUT and no RST is sent (TcpExtTCPAbortOnTimeout). Set TCP_USER_TIMEOUT (or
    an application deadline) when a request must fail fast.
    """,
    finds="retransmission-timeout",
)
def retransmission_timeout(lab: Lab) -> None:
    ut = lab.opts.timeout or 3.0
    listener = lab.listen()
    c, s = pair(lab, listener)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(ut * 1000))
    lab.say("client", f"TCP_USER_TIMEOUT={int(ut * 1000)} ms")
    exchange(lab, c, s)
    lab.nft(
        "server",
        drop_rule(lab.opts.port, "dport"),
        "drop everything arriving (the path went black)",
    )
    before = lab.nstat("client", "TcpExtTCPAbortOnTimeout", "TcpOutRsts")
    result: list[tuple[float, BaseException | None]] = []

    def client() -> None:
        c.settimeout(None)
        t0 = time.monotonic()
        c.sendall(b"request after the path went black\n")
        _, exc = recv_outcome(c)
        result.append((time.monotonic() - t0, exc))

    lab.say("client", "sends the next request, waits for the response")
    t = lab.spawn(client, "client")
    time.sleep(min(1.0, ut / 2))
    rows = lab.ss("client", "retransmitting")
    lab.check(
        rows and rows[0].send_q > 0 and "on," in rows[0].extra,
        "retransmission timer running, data unacknowledged",
    )
    t.join(timeout=ut + 5)
    lab.expect(result, "the read never returned")
    elapsed, exc = result[0]
    lab.say("client", f"read → {describe_exc(exc) if exc else 'data'} after {elapsed:.2f}s")
    lab.check(
        isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, "the read failed with ETIMEDOUT"
    )
    lab.check(ut - 0.3 < elapsed < ut + 1.5, f"gave up after ≈{ut:g}s (TCP_USER_TIMEOUT)")
    after = lab.nstat("client", "TcpExtTCPAbortOnTimeout", "TcpOutRsts")
    aborts = after.get("TcpExtTCPAbortOnTimeout", 0) - before.get("TcpExtTCPAbortOnTimeout", 0)
    rsts = after.get("TcpOutRsts", 0) - before.get("TcpOutRsts", 0)
    lab.say("kernel", f"client TcpExtTCPAbortOnTimeout +{aborts}, TcpOutRsts +{rsts}")
    lab.check(aborts == 1 and rsts == 0, "aborted on timeout without sending RST")
    dropped = nft_dropped(lab, "server")
    lab.say("kernel", f"server nft counter: {dropped} segments dropped")


# ------------------------------------------------------------------------------------------
# Old state meets a new connection: TIME-WAIT reuse, a middlebox that forgot the flow


def _bound_client(lab: Lab, port: int = 0) -> socket.socket:
    """A client socket with SO_REUSEADDR, bound to `port` (0: the kernel picks one)."""
    c = lab.sock("client")
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    c.settimeout(5)
    c.bind((lab.client_ip, port))
    return c


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
    s1, _ = listener.accept()
    lab._sockets.append(s1)
    exchange(lab, c1, s1)
    s1.close()
    lab.say("server", "close() first (like Connection: close)")
    outcome, _ = recv_outcome(c1)
    c1.close()
    lab.say("client", f"read → {outcome}; close()")
    lab.expect(lab.wait_state("server", "TIME-WAIT", timeout=2), "server never reached TIME-WAIT")
    time.sleep(0.05)
    sv = lab.ss("server", "before the second SYN")
    cl = lab.ss("client", "before the second SYN")
    lab.check(
        _rows_for(sv, cport) == ["TIME-WAIT"] and not _rows_for(cl, cport),
        f"the 4-tuple (client port {cport}) in TIME-WAIT on the server, gone on the client",
    )
    time.sleep(pause)
    c2 = _bound_client(lab, cport)
    c2.connect(lab.server_addr())
    lab.say("client", f"{pause:g}s later: bind({cport}, SO_REUSEADDR) + connect() → established")
    s2, peer = listener.accept()
    lab._sockets.append(s2)
    lab.check(peer[1] == cport, "the server accepted a new connection on the same 4-tuple")
    sv = lab.ss("server", "after the SYN met its TIME-WAIT socket")
    lab.check(
        _rows_for(sv, cport) == ["ESTAB"], "the TIME-WAIT socket gave way to the new connection"
    )
    exchange(lab, c2, s2)

    # B: the client closes first and keeps the TIME-WAIT itself.
    c2.close()
    lab.say("client", "close() first")
    outcome, _ = recv_outcome(s2)
    s2.close()
    lab.say("server", f"read → {outcome}; close()")
    lab.expect(lab.wait_state("client", "TIME-WAIT", timeout=2), "client never reached TIME-WAIT")
    time.sleep(0.05)
    cl = lab.ss("client", "after the client closed first")
    lab.check(_rows_for(cl, cport) == ["TIME-WAIT"], "the client holds the TIME-WAIT now")
    time.sleep(pause)
    c3 = _bound_client(lab, cport)
    c3.connect(lab.server_addr())
    lab.say("client", f"bind({cport}, SO_REUSEADDR) + connect() → established")
    s3, peer = listener.accept()
    lab._sockets.append(s3)
    lab.check(peer[1] == cport, "the client took over its own TIME-WAIT (explicit bind)")
    exchange(lab, c3, s3)
    c3.close()
    recv_outcome(s3)
    s3.close()
    lab.say("client", "close() first again; the server closes too")
    lab.expect(lab.wait_state("client", "TIME-WAIT", timeout=2), "client never reached TIME-WAIT")

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
    lab.say("client", f"connect() without bind → established from {_peer(c)}")
    s, peer = listener.accept()
    lab._sockets.append(s)
    exchange(lab, c, s)
    c.close()
    recv_outcome(s)
    s.close()
    return int(peer[1])


def _conntrack_firewall(port: int) -> str:
    """A stateful firewall for the middle namespace: tracked flows pass, untracked
    mid-stream segments to the port are answered with a forged RST.

    Packets pass the forwarding path twice in the relay topology (veth → TUN, TUN →
    veth); only the first pass is tracked and filtered.
    """
    return f"""table inet tcpwhy_lab {{
  chain raw {{
    type filter hook prerouting priority raw;
    iifname "tun0" notrack
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "tun0" accept
    ct state established,related counter accept
    ct state new tcp flags & (syn | ack | fin | rst) == syn accept
    tcp dport {port} ct state invalid counter reject with tcp reset
  }}
}}
"""


def _rejected(lab: Lab) -> int:
    """Segments the middle namespace's firewall answered with a RST so far."""
    from tcpwhy.lab import ns as nsmod

    out = nsmod.run(["nft", "list", "chain", "inet", "tcpwhy_lab", "forward"], lab.ns_of("middle"))
    line = next(line for line in out.splitlines() if "reject" in line)
    return int(line.split("packets ")[1].split()[0])


@scenario(
    "middlebox-reset",
    "a firewall on the path forgets an idle connection and resets it: RST with the server's address",
    """
    A stateful firewall between client and server (conntrack in the middle
    namespace, with its established-flow timeout shortened from 5 days to a few
    seconds, like the 350 s of an AWS NLB) lets tracked connections pass and
    answers untracked mid-stream segments with a forged RST. The connection goes
    idle longer than that timeout; the firewall silently drops its state. The
    client's next request is not tracked any more: the firewall rejects it with a
    RST that carries the server's address and a sequence number the client
    accepts, and the client's read fails with "Connection reset by peer". The
    server never saw the request nor any error: its socket is still ESTABLISHED.
    On the client's wire the RST gives itself away: its IP TTL is 64 while every
    packet the server sent arrives with a lower one (they crossed the router), and
    it arrives faster than the server could answer. Fix: keepalives or pings more
    often than the shortest idle timeout on the path; a pool idle timeout below it.
    """,
    relay=True,
    finds="middlebox-reset",
    shows="(the RST's TTL 64 against the server's 62)",
)
def middlebox_reset(lab: Lab) -> None:
    fw_timeout = max(1, round(lab.opts.timeout or 2))
    idle = lab.opts.idle if lab.opts.idle is not None else fw_timeout + 1.0
    lab.expect(idle > fw_timeout, "--idle must exceed the firewall's idle timeout (--timeout)")
    lab.sysctl(
        "middle",
        {
            "net.netfilter.nf_conntrack_tcp_timeout_established": fw_timeout,
            "net.netfilter.nf_conntrack_tcp_loose": 0,
        },
    )
    lab.nft(
        "middle",
        _conntrack_firewall(lab.opts.port),
        "stateful firewall: tracked flows pass, untracked segments get a RST",
    )
    listener = lab.listen()
    c, s = pair(lab, listener)
    for i in range(lab.opts.count or 2):
        exchange(lab, c, s, f"request {i + 1}")
    server_read: list[str] = []

    def server() -> None:
        s.settimeout(idle + 10)
        outcome, _ = recv_outcome(s)
        server_read.append(outcome)

    lab.spawn(server, "server")
    lab.say("server", "waits for the next request (blocking read)")
    lab.say("lab", f"connection idle for {idle:g}s (firewall idle timeout {fw_timeout}s)")
    time.sleep(idle)
    rejected = _rejected(lab)
    c.sendall(b"request after the idle time\n")
    lab.say("client", "sends the next request on the connection")
    outcome, exc = recv_outcome(c)
    lab.say("client", f"read → {outcome}")
    lab.check(isinstance(exc, ConnectionResetError), "the client's request was answered with RST")
    resets = _rejected(lab)
    lab.say("kernel", f"middle nft: untracked segment rejected {resets}× (before: {rejected})")
    lab.check(resets == 1 and rejected == 0, "the firewall sent the RST, after it forgot the flow")
    time.sleep(0.2)
    sv = lab.ss("server", "after the client's reset")
    cl = lab.ss("client", "after the reset")
    lab.check(
        [r.state for r in sv] == ["ESTAB"] and not cl,
        "the server's socket is still ESTABLISHED, the client's is gone",
    )
    lab.check(not server_read, "the server application saw nothing: no request, no error")
    lab.stop_capture()  # the server's late FIN at teardown is not part of the story


# ------------------------------------------------------------------------------------------
# Floods

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
    from tcpwhy.lab import ns as nsmod

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
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
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
