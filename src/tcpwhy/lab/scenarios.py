"""What the scenario families (``scenarios_<family>.py``, one module each, all loaded by
`tcpwhy.lab.runner`) share: connecting a client, a connected pair, one request and
response, what a read reports, the nft drop rule and its counter.

Every scenario checks at run time what the applications saw (exceptions,
EOF) and what `ss` showed; the tests check the recorded packets separately,
so that a scenario that "passes" for the wrong reason is caught by one of
the two.
"""

from __future__ import annotations

import socket

from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Lab, describe_exc


def local_addr(s: socket.socket) -> str:
    """A socket's own address as the story prints it (IPv6 in brackets)."""
    host, port = s.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect(lab: Lab, port: int | None = None, timeout: float | None = 5.0) -> socket.socket:
    """A client connected to the server's port, its source address told in the story."""
    c = lab.sock("client")
    c.settimeout(timeout)
    c.connect(lab.server_addr(port))
    lab.say("client", f"connect() → established from {local_addr(c)}")
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
