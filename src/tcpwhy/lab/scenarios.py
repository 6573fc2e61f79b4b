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
from tcpwhy.lab.relay import DROP, FIN, HOLD, PASS, RST, SYN, Seg
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
