"""Established connections that stall or die: a receiver's zero window, a peer that lost
the connection or vanished, a path that went black, a middlebox that forgot the flow.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Lab, SockRow, describe_exc
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import (
    drop_rule,
    exchange,
    idle_timeout,
    nft_dropped,
    pair,
    recv_outcome,
    wait_until,
)


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
    wait_until(lambda: any("persist" in r.extra for r in _ss_quiet(lab, "client")), 3, 0.02)
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
    wait_until(lambda: sent, 3, 0.01)
    lab.check(sent and got == total, "transfer completed after the window reopened")
    c.close()
    outcome, _ = recv_outcome(s)
    s.close()
    lab.say("server", f"read → {outcome}; close()")
    lab.wait_state("client", "TIME-WAIT", timeout=2)


def _ss_quiet(lab: Lab, side: str) -> list[SockRow]:
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
    idle = idle_timeout(lab, fw_timeout + 1.0)
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
