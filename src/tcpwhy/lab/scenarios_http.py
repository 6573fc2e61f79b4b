"""Keep-alive HTTP: a pooled connection reused after (or while) the server's idle timeout
closes it, and the baseline of ordinary traffic that must draw no finding.

The TLS variants of these are in `scenarios_tls`.
"""

from __future__ import annotations

import time

from tcpwhy.decode.table import FIN
from tcpwhy.lab.env import Lab
from tcpwhy.lab.http import STALE_ERRORS, KeepAliveServer, Pool
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import Crossing, idle_timeout, race_retried, relay_of, wait_until


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
    idle = idle_timeout(lab)
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
    lab.expect_state("client", "TIME-WAIT", "client never reached TIME-WAIT", timeout=2)
    lab.expect_state("server", "TIME-WAIT", "server never reached TIME-WAIT", timeout=2)
    time.sleep(0.1)
    lab.ss("client", "after both connections ended")
    lab.ss("server", "after both connections ended")
    lab.check(not pool.errors, "no request failed")
    server.stop()


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
    idle = idle_timeout(lab)
    # the FIN's retransmissions are held too: the server's RTO (200 ms) can fire while ss runs
    rule = Crossing(lambda seg: seg.flags & FIN)
    fin = rule.held
    server = KeepAliveServer(lab, idle)
    pool = Pool(lab)
    lab.check(pool.request("/first") == 200, "first request answered")
    relay_of(lab).rule = rule
    wait_until(lambda: fin, idle + 3, 0.005)
    lab.expect(fin, "the server never sent its idle-close FIN")
    lab.say("relay", f"holding the server's FIN in flight: {fin[0].describe()}")
    lab.ss("client", "the FIN has not arrived")
    lab.ss("server", "after its idle close")
    race_retried(
        lab,
        pool,
        rule,
        passed="the FIN",
        released="FIN released",
        unacked="does not acknowledge the server's FIN",
    )
    server.stop()
