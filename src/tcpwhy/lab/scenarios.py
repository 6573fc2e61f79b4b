"""The scenarios: each plays one incident with real sockets and checks what the kernel did.

Every scenario checks at run time what the applications saw (exceptions,
EOF) and what `ss` showed; the tests check the recorded packets separately,
so that a scenario that "passes" for the wrong reason is caught by one of
the two.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from tcpwhy.lab.env import Lab, describe_exc
from tcpwhy.lab.http import STALE_ERRORS, KeepAliveServer, Pool
from tcpwhy.lab.relay import DROP, FIN, HOLD, PASS, PASS_RELEASE, RELEASE, RST, SYN, Seg
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
    patterns=("P1",),
)
def stale_keepalive(lab: Lab) -> None:
    idle = lab.opts.idle if lab.opts.idle is not None else 1.0
    server = KeepAliveServer(lab, idle)
    pool = Pool(lab, body_pause=lab.opts.delay)
    lab.check(pool.request("/first") == 200, "first request answered")
    lab.say("client", f"connection back in the pool; idle for {idle + 0.4:g}s")
    lab.expect(lab.wait_state("client", "CLOSE-WAIT", timeout=idle + 3), "client socket never reached CLOSE-WAIT")
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
)
def clean(lab: Lab) -> None:
    server = KeepAliveServer(lab, idle=5.0)
    pool = Pool(lab)
    lab.check(pool.request("/short", close=True) == 200, "short request answered")
    for i in range(lab.opts.count or 3):
        lab.expect(pool.request(f"/keepalive/{i}") == 200, "keep-alive request failed")
    lab.check(pool.connections == 2, "two connections, the second reused for every keep-alive request")
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
    c = lab.socket("client")
    c.settimeout(timeout)
    c.connect(lab.server_addr(port))
    lab.say("client", f"connect() → established from {_peer(c)}")
    return c


def pair(lab: Lab, listener: socket.socket, port: int | None = None) -> tuple[socket.socket, socket.socket]:
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
        f"table inet tcpwhy_lab {{ chain {hook} {{ type filter hook {hook} priority -300; "
        f"tcp {what} {port} {extra} counter drop; }} }}"
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
    patterns=("P10",),
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
    lab.expect(len(lab.wait_state("server", "CLOSE-WAIT", count=n)) == n, "server sockets not in CLOSE-WAIT")
    lab.expect(len(lab.wait_state("client", "FIN-WAIT-2", count=n)) == n, "client sockets not in FIN-WAIT-2")
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
    patterns=("P14",),
)
def time_wait(lab: Lab) -> None:
    n = lab.opts.count or 20
    listener = lab.listen()
    for _ in range(n):
        c = lab.socket("client")
        c.settimeout(5)
        c.connect(lab.server_addr())
        s, _ = listener.accept()
        c.sendall(b"GET\n")
        s.recv(100)
        s.sendall(b"200\n")
        c.recv(100)
        c.close()
        outcome, _ = recv_outcome(s)
        s.close()
    lab.say("client", f"{n} connections: request, response, client close(), server close()")
    rows = lab.wait_state("client", "TIME-WAIT", count=n)
    time.sleep(0.05)
    counts = lab.ss_summary("client", "after the burst")
    lab.ss_summary("server", "after the burst")
    lab.check(len(rows) == n and counts.get("TIME-WAIT") == n, f"{n} TIME-WAIT sockets on the client")
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
    patterns=("P18",),
)
def refused(lab: Lab) -> None:
    n = lab.opts.count or 1
    for _ in range(n):
        c = lab.socket("client")
        c.settimeout(5)
        t0 = time.monotonic()
        try:
            c.connect(lab.server_addr())
        except ConnectionRefusedError as exc:
            lab.say("client", f"connect() → {describe_exc(exc)} after {1000 * (time.monotonic() - t0):.1f} ms")
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
    patterns=("P20", "P21"),
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
    lab.check(isinstance(exc, ConnectionResetError), "close() with unread data reset the connection")

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
    patterns=("P2",),
)
def keepalive_race(lab: Lab) -> None:
    assert lab.relay is not None
    relay = lab.relay
    idle = lab.opts.idle if lab.opts.idle is not None else 1.0
    fin: list[Seg] = []
    crossed: list[Seg] = []

    def rule(seg: Seg) -> str:
        if not seg.to_server and seg.flags & FIN and not fin:
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
    lab.check(crossed[0].ack == fin[0].seq, "the request does not acknowledge the server's FIN (they crossed)")
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
    patterns=("P13",),
)
def simultaneous_close(lab: Lab) -> None:
    assert lab.relay is not None
    relay = lab.relay
    fins: list[Seg] = []
    acks: list[Seg] = []

    def rule(seg: Seg) -> str:
        if seg.flags & FIN and len(fins) < 2:
            fins.append(seg)
            return RELEASE if len(fins) == 2 else HOLD
        if len(fins) == 2 and seg.pure_ack and len(acks) < 2:
            acks.append(seg)
            return HOLD
        return PASS

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
    path. The server's FIN retransmission timer fires (RTO, at least 200 ms) and
    it sends the FIN again; the client, still in TIME-WAIT, acknowledges it again
    — this is the reason TIME-WAIT exists — and the server's socket finally goes
    away. Without TIME-WAIT the retransmitted FIN would meet no socket and draw
    an RST.
    """,
    relay=True,
    patterns=("P12",),
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
