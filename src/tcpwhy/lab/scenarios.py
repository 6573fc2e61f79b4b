"""What the scenario families (``scenarios_<family>.py``, one module each, all loaded by
`tcpwhy.lab.runner`) share: connecting a client, a connected pair, one request and
response, an orderly close, what a read reports, waiting for the relay to see something,
the relay rule that makes segments cross and how a keep-alive race ends, the nft drop
rule and its counter.

Every scenario checks at run time what the applications saw (exceptions,
EOF) and what `ss` showed; the tests check the recorded packets separately,
so that a scenario that "passes" for the wrong reason is caught by one of
the two.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tcpwhy.decode.table import endpoint_text
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Lab, describe_exc
from tcpwhy.lab.relay import HOLD, PASS, PASS_RELEASE, Relay, Seg

if TYPE_CHECKING:
    from tcpwhy.lab.http import Pool


def local_addr(s: socket.socket) -> str:
    """A socket's own address as the story prints it (IPv6 in brackets)."""
    host, port = s.getsockname()[:2]
    return endpoint_text(host, port)


def connect(lab: Lab, port: int | None = None, timeout: float | None = 5.0) -> socket.socket:
    """A client connected to the server's port, its source address told in the story."""
    c = lab.sock("client")
    c.settimeout(timeout)
    c.connect(lab.server_addr(port))
    lab.say("client", f"connect() → established from {local_addr(c)}")
    return c


def accept(lab: Lab, listener: socket.socket) -> tuple[socket.socket, Any]:
    """accept(): the server's socket (closed at the lab's teardown if the scenario does not)
    and the peer's address."""
    s, peer = listener.accept()
    lab._sockets.append(s)
    return s, peer


def pair(
    lab: Lab, listener: socket.socket, port: int | None = None
) -> tuple[socket.socket, socket.socket]:
    """A connected (client, server) pair: the handshake completes before accept() returns."""
    c = connect(lab, port)
    s, _ = accept(lab, listener)
    return c, s


def exchange(lab: Lab, c: socket.socket, s: socket.socket, what: str = "request") -> None:
    """One request and its response on a pair: data both ways before the incident starts."""
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


def close_first(first: socket.socket, second: socket.socket) -> str:
    """An orderly close: `first` closes (and keeps the TIME-WAIT), `second` reads the EOF
    and closes too. What that read reported."""
    first.close()
    outcome, _ = recv_outcome(second)
    second.close()
    return outcome


def serve_and_close(
    lab: Lab, listener: socket.socket, c: socket.socket, *, server_first: bool
) -> int:
    """Accept client `c`'s connection, one request and response, then an orderly close by
    the server first (like Connection: close) or the client first: the TIME-WAIT stays
    with that side. The client's port as the server saw it."""
    s, peer = accept(lab, listener)
    exchange(lab, c, s)
    if server_first:
        close_first(s, c)
    else:
        close_first(c, s)
    return int(peer[1])


def relay_of(lab: Lab) -> Relay:
    """The relay of a scenario registered with relay=True (the only ones that have one)."""
    assert lab.relay is not None
    return lab.relay


def idle_timeout(lab: Lab, default: float = 1.0) -> float:
    """--idle, or the scenario's own default when it is not given (0 is a valid --idle)."""
    return lab.opts.idle if lab.opts.idle is not None else default


def wait_until(cond: Callable[[], object], timeout: float, step: float) -> None:
    """Poll `cond` every `step` s until it holds or `timeout` s have passed; the caller
    checks it again, so that a timeout fails with the caller's own reason."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(step)


class Crossing:
    """A relay rule that makes the server's segments and the client's next request cross on
    the path: server→client segments that `hold` picks are held until a client→server data
    segment has passed them, then released behind it. `held` and `crossed` are what it saw."""

    def __init__(self, hold: Callable[[Seg], object]) -> None:
        self.hold = hold
        self.held: list[Seg] = []
        self.crossed: list[Seg] = []

    def __call__(self, seg: Seg) -> str:
        if not seg.to_server and self.hold(seg) and not self.crossed:
            self.held.append(seg)
            return HOLD
        if seg.to_server and seg.payload_len and self.held and not self.crossed:
            self.crossed.append(seg)
            return PASS_RELEASE
        return PASS


def race_retried(
    lab: Lab,
    pool: Pool,
    rule: Crossing,
    *,
    passed: str,
    released: str,
    unacked: str,
    conn: str = "connection",
) -> None:
    """How a keep-alive race ends (the cleartext one and its TLS twin) once `rule` holds the
    server's idle close: the request on the reused connection passes the held segments (the
    relay's words for them and their release: `passed`, `released`) acknowledging none of
    them (`unacked`, the check's words: they crossed) and fails; the pool's retry on a new
    `conn` is answered; the pool then closes and the client's socket goes to TIME-WAIT."""
    status = pool.request("/second")
    lab.expect(rule.crossed, "the request never reached the relay")
    lab.say("relay", f"request passed {passed}: {rule.crossed[0].describe()}; {released}")
    lab.check(rule.crossed[0].ack == rule.held[0].seq, f"the request {unacked} (they crossed)")
    lab.check(len(pool.errors) == 1, "the reused connection failed")
    lab.check(status == 200, f"retry on a new {conn} answered")
    pool.close()
    lab.wait_state("client", "TIME-WAIT", timeout=2)


def drop_rule(port: int, what: str, hook: str = "input", extra: str = "") -> str:
    """An nft ruleset in its own table (removed with `delete table`) with a counter."""
    return (
        f"table inet tcpwhy_lab {{\n  chain {hook} {{\n    type filter hook {hook} priority -300;\n"
        f"    tcp {what} {port} {extra} counter drop\n  }}\n}}\n"
    )


def nft_dropped(lab: Lab, side: str) -> int:
    """Packets the `drop_rule` table in one side's namespace has dropped so far."""
    out = nsmod.run(["nft", "list", "table", "inet", "tcpwhy_lab"], lab.ns_of(side))
    return sum(int(tok.split()[0]) for tok in out.split("packets ")[1:])
