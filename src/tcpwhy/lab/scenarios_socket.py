"""Scenarios where the failure is a local socket call, not a packet: bind() and connect()
refused by the kernel's port bookkeeping (EADDRINUSE, EADDRNOTAVAIL).

The wire shows only the connections that hold the port; each scenario checks the
errno the application saw and the `ss` rows that explain it.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import Lab, describe_exc
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import accept, close_first, connect, serve_and_close


def _bind(
    lab: Lab, port: int, *, reuseaddr: bool, reuseport: bool = False, listen: bool = True
) -> socket.socket | OSError:
    """bind() (and listen()) on the server, as a restarting service would: the socket or the error."""
    s = lab.sock("server")
    opts = [name for name, on in (("SO_REUSEADDR", reuseaddr), ("SO_REUSEPORT", reuseport)) if on]
    if reuseaddr:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    what = f"bind(:{port}" + (", " + " + ".join(opts) if opts else ", no SO_REUSEADDR") + ")"
    try:
        s.bind(lab.server_addr(port))
        if listen:
            s.listen(16)
    except OSError as exc:
        lab.say("server", f"{what} → {describe_exc(exc)}")
        s.close()
        return exc
    lab.say("server", f"{what} → ok" + (", listening" if listen else ""))
    return s


def _failed(lab: Lab, res: socket.socket | OSError, code: int, what: str) -> None:
    """Check that a bind() or connect() failed with errno `code`."""
    lab.check(isinstance(res, OSError) and res.errno == code, what)


def _succeeded(
    lab: Lab,
    res: socket.socket | OSError,
    what: str,
    also: Callable[[socket.socket], bool] = lambda s: True,
) -> socket.socket:
    """Check that a bind() or connect() gave a socket (for which `also` holds, asked only
    then): the socket."""
    lab.check(isinstance(res, socket.socket) and also(res), what)
    assert isinstance(res, socket.socket)
    return res


def _bind_in_use(
    lab: Lab, port: int, what: str, *, reuseaddr: bool, reuseport: bool = False
) -> None:
    """Check that the server's bind() on `port` fails with EADDRINUSE: something holds it."""
    res = _bind(lab, port, reuseaddr=reuseaddr, reuseport=reuseport)
    _failed(lab, res, errno.EADDRINUSE, what)


def _bind_ok(
    lab: Lab,
    port: int,
    what: str,
    *,
    reuseport: bool = False,
    also: Callable[[socket.socket], bool] = lambda s: True,
) -> socket.socket:
    """Check that the server's bind() on `port` with SO_REUSEADDR (as every careful service
    sets it) succeeds: the listening socket."""
    return _succeeded(lab, _bind(lab, port, reuseaddr=True, reuseport=reuseport), what, also)


def _listeners(lab: Lab, port: int) -> int:
    out = nsmod.run(["ss", "-Hltn", f"sport = :{port}"], lab.ns_of("server"))
    n = sum(1 for line in out.splitlines() if line.startswith("LISTEN"))
    lab.say("kernel", f"ss -ltn on server: {n} LISTEN socket(s) on :{port}")
    return n


def _serve_one(lab: Lab, listener: socket.socket, port: int | None = None) -> int:
    """One request on a new connection; the server closes first (like Connection: close),
    so the server keeps the connection's TIME-WAIT on its listening port. The client port."""
    return serve_and_close(lab, listener, connect(lab, port), server_first=True)


@scenario(
    "addr-in-use-restart",
    "a server restarted while its port holds TIME-WAIT: bind() fails with EADDRINUSE "
    "unless SO_REUSEADDR",
    """
    The server closes its connections first (like Connection: close), so its own kernel
    keeps each one in TIME-WAIT on the listening port for 60 s. The server is stopped and
    started again at once: bind() without SO_REUSEADDR fails with "Address already in use"
    (EADDRINUSE, errno 98) because the TIME-WAIT sockets still hold the port, although
    nothing listens. With SO_REUSEADDR bind() succeeds — provided the old sockets had it
    too: a TIME-WAIT socket keeps the SO_REUSEADDR of the listener it came from, and
    a listener that never set it blocks even a new server that does (shown on the next
    port). Two listeners on one port at the same time need SO_REUSEPORT on both (the
    kernel spreads new connections over them); SO_REUSEADDR alone does not allow that.
    "Address already in use" with nothing in TIME-WAIT means that another process still
    listens: ss -ltnp 'sport = :PORT' names it. Fix: set SO_REUSEADDR on every listening
    socket (nginx, Go, Node.js and Python's asyncio do it themselves; a plain Python
    socket, socketserver.TCPServer and Java's ServerSocket must ask for it); never
    SO_LINGER 0 to get rid of TIME-WAIT.
    """,
    finds=None,
)
def addr_in_use_restart(lab: Lab) -> None:
    port = lab.opts.port
    n = lab.opts.count or 3
    listener = lab.listen()
    lab.say("server", f"listening on :{port} with SO_REUSEADDR")
    for _ in range(n):
        _serve_one(lab, listener)
    lab.say("server", f"{n} connections: request, response, the server close()s first")
    lab.expect(
        len(lab.wait_state("server", "TIME-WAIT", count=n)) >= n,
        "server sockets never reached TIME-WAIT",
    )
    listener.close()
    lab.say("server", "stopped: listening socket closed")
    time.sleep(0.05)
    counts = lab.ss_summary("server", "after the stop")
    lab.check(
        counts.get("TIME-WAIT") == n and _listeners(lab, port) == 0,
        f"nothing listens on :{port}, {n} TIME-WAIT sockets on it on the server",
    )

    # the restart
    _bind_in_use(
        lab,
        port,
        "bind() without SO_REUSEADDR: EADDRINUSE, the TIME-WAIT sockets hold the port",
        reuseaddr=False,
    )
    _bind_in_use(
        lab,
        port,
        "SO_REUSEPORT alone does not help: the TIME-WAIT sockets were not SO_REUSEPORT",
        reuseaddr=False,
        reuseport=True,
    )
    new = _bind_ok(lab, port, "bind() with SO_REUSEADDR succeeds at once", reuseport=True)
    cport = _serve_one(lab, new)
    lab.say("client", f"served by the restarted server (client port {cport})")

    # a second instance on the same port, as in a zero-downtime handover
    _bind_in_use(
        lab,
        port,
        "a second listener with SO_REUSEADDR only: EADDRINUSE (the port is listened on)",
        reuseaddr=True,
    )
    second = _bind_ok(
        lab,
        port,
        "SO_REUSEPORT on both: two listeners on the port at once",
        reuseport=True,
        also=lambda s: _listeners(lab, port) == 2,
    )
    new.close()
    lab.say("server", "the first instance stops; the second goes on serving")
    cport = _serve_one(lab, second)
    lab.say("client", f"served by the second instance (client port {cport})")
    second.close()

    # the old server never set SO_REUSEADDR: its TIME-WAIT sockets block even a careful one
    other = port + 1 if port < 65535 else port - 1
    old = _bind(lab, other, reuseaddr=False)
    lab.expect(isinstance(old, socket.socket), f"could not listen on :{other}")
    assert isinstance(old, socket.socket)
    _serve_one(lab, old, other)
    old.close()
    lab.say("server", f"a server on :{other} without SO_REUSEADDR served one connection, stopped")
    lab.expect(
        lab.wait_state("server", "TIME-WAIT", port=other),
        f"no TIME-WAIT on :{other}",
    )
    _bind_in_use(
        lab,
        other,
        "TIME-WAIT of a listener without SO_REUSEADDR blocks a new bind() even with SO_REUSEADDR",
        reuseaddr=True,
    )


BACKEND_PORT = 5432


@scenario(
    "ephemeral-overlap",
    "a service port inside ip_local_port_range: an outgoing connect() takes it, the service's "
    "bind() fails with EADDRINUSE",
    """
    net.ipv4.ip_local_port_range on the server host covers the service's own port (here
    narrowed to that one port so that the run is deterministic; on a real host with
    1024-65535 or a service port above 32768 the odds are one in the range's size per
    connection, which over a day of connections is a certainty). While the service is
    down (a restart, a deploy), a process on the same host connects to a backend, and
    connect() picks the service's port as its source port. The service's bind() then
    fails with "Address already in use" (EADDRINUSE), with or without SO_REUSEADDR, for as
    long as that connection lives — and for 60 s after it when that side closed first
    (its TIME-WAIT socket never had SO_REUSEADDR; shown on the next port). A second
    connect() to the same backend finds no free port: "Cannot assign requested address"
    (EADDRNOTAVAIL). Fix: net.ipv4.ip_local_reserved_ports lists the service ports, so
    connect() never picks them (bind() still can), or move the range away from them.
    """,
    finds=None,
)
def ephemeral_overlap(lab: Lab) -> None:
    port = lab.opts.port
    bport = BACKEND_PORT if port != BACKEND_PORT else BACKEND_PORT + 1
    other = port + 1 if port < 65535 else port - 1
    backend = lab.sock("client")
    backend.bind((lab.client_ip, bport))
    backend.listen(16)
    lab.say("client", f"a backend listens on {lab.client_ip} port {bport}")
    lab.sysctl("server", {"net.ipv4.ip_local_port_range": f"{port} {port}"})

    def outgoing() -> socket.socket | OSError:
        c = lab.sock("server")
        c.settimeout(5)
        try:
            c.connect((lab.client_ip, bport))
        except OSError as exc:
            lab.say("server", f"connect() to the backend → {describe_exc(exc)}")
            c.close()
            return exc
        lab.say("server", f"connect() to the backend → established from port {c.getsockname()[1]}")
        return c

    def connected_from(sport: int, what: str) -> tuple[socket.socket, socket.socket]:
        """An outgoing connection checked to come from source port `sport`: its socket and
        the backend's."""
        out = _succeeded(lab, outgoing(), what, lambda s: s.getsockname()[1] == sport)
        peer, _ = accept(lab, backend)
        return out, peer

    out, peer = connected_from(port, f"connect() took the service's port {port} as its source port")
    rows = lab.ss("server", "the outgoing connection")
    lab.check(
        [r.state for r in rows if r.local_port == port] == ["ESTAB"],
        f"an ESTAB socket with local port {port} on the server",
    )
    _bind_in_use(
        lab,
        port,
        "the service's bind() with SO_REUSEADDR: EADDRINUSE, the outgoing connection holds the port",
        reuseaddr=True,
    )
    _failed(
        lab,
        outgoing(),
        errno.EADDRNOTAVAIL,
        "a second connect() to the backend: EADDRNOTAVAIL, no free port in the range",
    )

    # the backend ends the connection first: the port is free again at once
    outcome = close_first(peer, out)
    lab.say("server", f"read → {outcome}; close()")
    lab.expect_state("client", "TIME-WAIT", "backend never in TIME-WAIT", port=bport)
    time.sleep(0.05)
    lab.check(
        not [r for r in lab.ss("server", "after the backend closed") if r.local_port == port],
        f"no socket holds port {port} on the server any more",
    )
    svc = _bind_ok(lab, port, "the service's bind() succeeds now")
    svc.close()
    lab.say("server", "service stopped again")

    # the fix: reserve the service port; connect() skips it
    lab.sysctl(
        "server",
        {
            "net.ipv4.ip_local_port_range": f"{min(port, other)} {max(port, other)}",
            "net.ipv4.ip_local_reserved_ports": str(port),
        },
    )
    out, peer = connected_from(other, f"with {port} reserved, connect() takes {other}")
    svc = _bind_ok(lab, port, "the service's bind() succeeds while it is connected")
    serve_and_close(lab, svc, connect(lab), server_first=False)
    lab.say("client", "close() first; the service closes too")

    # the connecting side closes first: its TIME-WAIT holds the port for 60 s
    close_first(out, peer)
    lab.say("server", "the outgoing connection close()s first")
    lab.expect_state("server", "TIME-WAIT", f"no TIME-WAIT on :{other}", port=other)
    time.sleep(0.05)
    lab.ss("server", "after the outgoing connection closed", port=other)
    _bind_in_use(
        lab,
        other,
        f"bind(:{other}) with SO_REUSEADDR: EADDRINUSE, held by the connect() socket's TIME-WAIT",
        reuseaddr=True,
    )
    svc.close()
