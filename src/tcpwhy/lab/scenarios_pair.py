"""Scenarios recorded at both ends of a path: a client-side and a server-side capture of the
same connections, with the relay between them as the path (delay, loss, a middlebox).

What happened in between is known exactly here, from the relay's own log (segments delayed,
dropped, injected), so the pairing of two captures (`tcpwhy.diagnose.pairing`) can be
checked against it. The client's capture goes where the lab writes every recording; the
server's next to it (`server_capture_path`).
"""

from __future__ import annotations

import ipaddress
import threading
import time

from tcpwhy.capture.live import LiveCapture
from tcpwhy.decode.table import SYN
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.env import SERVER_IF, Lab
from tcpwhy.lab.relay import DROP, Seg, build_rst
from tcpwhy.lab.runner import scenario
from tcpwhy.lab.scenarios import exchange, idle_timeout, pair, recv_outcome, relay_of


def server_capture_path(client_path: str) -> str:
    """Where the server-side capture of a two-ended recording goes: `x.pcap` → `x.server.pcap`
    (`x.client.pcap` → `x.server.pcap`)."""
    base = client_path[: -len(".pcap")] if client_path.endswith(".pcap") else client_path
    if base.endswith(".client"):
        base = base[: -len(".client")]
    return base + ".server.pcap"


class ServerCapture:
    """A second capture, on the server's veth, for as long as the scenario plays."""

    def __init__(self, lab: Lab) -> None:
        self.cap: LiveCapture | None = None
        if lab.capture is None:
            return
        with nsmod.entered(lab.ns_of("server")):
            sock = LiveCapture.open_socket(SERVER_IF)
        self.cap = LiveCapture(sock, server_capture_path(lab.capture.path)).start()
        lab.say("lab", f"capturing on the server's side too: {self.cap.path}")

    def stop(self, lab: Lab) -> None:
        if self.cap is None:
            return
        time.sleep(0.05)
        self.cap.stop()
        lab.expect(
            self.cap.drops == 0,
            f"the server-side capture lost {self.cap.drops} packets in the kernel: not evidence",
        )
        lab.say("lab", f"server-side capture: {self.cap.written} packets")


class IdleMiddlebox:
    """The relay's rule: a path with `delay` seconds each way through a stateful box that
    forgets a flow idle longer than `timeout` and answers the client's next segment with a
    RST that looks like the server's (its address, the TTL the server's packets arrive with,
    the sequence number the segment acknowledged), dropping the segment. Optionally it
    drops the first data segment of one client port once (a loss on the path)."""

    def __init__(self, lab: Lab, delay: float, timeout: float) -> None:
        self.lab = lab
        self.relay = relay_of(lab)
        self.delay = delay
        self.timeout = timeout
        self.last: dict[int, float] = {}  # client port → last segment seen (monotonic)
        self.server_ttl: dict[int, int] = {}
        self.forgotten: set[int] = set()
        self.drop_once: int | None = None  # client port whose next data segment is lost
        self.lock = threading.Lock()
        self.client = ipaddress.ip_address(lab.client_ip).packed
        self.server = ipaddress.ip_address(lab.server_ip).packed

    def __call__(self, seg: Seg) -> str | float:
        now = time.monotonic()
        cport = seg.sport if seg.to_server else seg.dport
        with self.lock:
            if seg.flags & SYN and seg.to_server:
                self.forgotten.discard(cport)
            elif cport not in self.forgotten and now - self.last.get(cport, now) > self.timeout:
                self.forgotten.add(cport)  # the state expired while the flow was idle
            if cport in self.forgotten:
                if seg.to_server:
                    rst = build_rst(
                        self.server,
                        self.client,
                        seg.dport,
                        seg.sport,
                        seg.ack,
                        self.server_ttl.get(cport, 64),
                    )
                    self.relay.inject(rst, self.delay)
                return DROP
            self.last[cport] = now
            if not seg.to_server:
                self.server_ttl[cport] = seg.ttl
            if seg.to_server and cport == self.drop_once and seg.payload_len > 0:
                self.drop_once = None
                return DROP
        return self.delay


@scenario(
    "middlebox-idle-reset-path",
    "recorded at both ends of a 60 ms path: a middlebox forgets idle flows and resets them "
    "in the server's name",
    """
    Client and server talk across a path with 30 ms each way (the relay) through a
    stateful middlebox — a load balancer, NAT or firewall — that forgets a flow idle
    longer than its timeout (2 s here, 350 s on an AWS NLB) and answers the next
    client segment with a RST of its own: the server's address, the TTL the server's
    packets arrive with, the sequence number the segment acknowledged. Four
    connections: one loses its request once on the path (the client resends it after
    its retransmission timeout) and closes normally; two sit idle past the timeout and
    their next request is reset; one sends a ping more often than the timeout and
    lives. Recorded on the client's side and on the server's side at once. On the
    client's side alone the RSTs look like the server's, but they arrive 30 ms after
    the request, half the round trip: the server could not have answered that fast.
    The server's side shows no RST and no request at all: its sockets are still
    ESTABLISHED. Fix: keepalives or pings more often than the shortest idle timeout on
    the path; a pool idle timeout below it.
    """,
    relay=True,
    finds="middlebox-reset",
    shows="(likely: the RST comes 30 ms after the request on a 60 ms path); with its `.server.pcap`: certain",
)
def middlebox_idle_reset_path(lab: Lab) -> None:
    delay = lab.opts.delay if lab.opts.delay is not None else 0.03
    timeout = lab.opts.timeout if lab.opts.timeout is not None else 2.0
    idle = idle_timeout(lab, timeout + 1.0)
    lab.expect(idle > timeout, "--idle must exceed the middlebox's idle timeout (--timeout)")
    relay = relay_of(lab)
    box = IdleMiddlebox(lab, delay, timeout)
    relay.rule = box
    lab.say(
        "lab", f"path: {delay * 1e3:g} ms each way; middlebox forgets flows idle > {timeout:g}s"
    )
    srv = ServerCapture(lab)
    try:
        _play(lab, box, idle)
    finally:
        srv.stop(lab)
    counts = relay.log.counts()
    lab.say(
        "relay",
        f"counts: delayed={counts['delayed']} dropped={counts['dropped']} "
        f"injected={counts['injected']}",
    )
    lab.check(
        counts["dropped"] == 3 and counts["injected"] == 2,
        "the relay dropped 3 segments (one loss, two requests it reset) and injected 2 RSTs",
    )


def _play(lab: Lab, box: IdleMiddlebox, idle: float) -> None:
    listener = lab.listen()
    # 1: the request is lost once on the path, then the connection closes normally
    c1, s1 = pair(lab, listener)
    with box.lock:
        box.drop_once = c1.getsockname()[1]
    exchange(lab, c1, s1, "request (lost once on the path)")
    lab.check(box.drop_once is None, "the relay dropped the first copy of the request")
    c1.close()
    lab.expect(s1.recv(10) == b"", "the server saw the client's FIN")
    s1.close()
    lab.say("client", "connection 1 closed (FIN both ways)")
    # 2, 3: go idle past the middlebox's timeout; 4: pings more often than it
    conns = [pair(lab, listener) for _ in range(3)]
    for k, (c, s) in enumerate(conns):
        exchange(lab, c, s, f"request on connection {k + 2}")
    lab.say("lab", f"connections 2 and 3 idle for {idle:g}s; connection 4 pings meanwhile")
    end = time.monotonic() + idle
    c4, s4 = conns[2]
    while time.monotonic() < end:
        time.sleep(min(box.timeout / 2, max(0.0, end - time.monotonic())))
        exchange(lab, c4, s4, "ping")
    for k, (c, _) in enumerate(conns[:2]):
        c.sendall(b"request after the idle time\n")
        outcome, exc = recv_outcome(c)
        lab.say("client", f"connection {k + 2}: next request → {outcome}")
        lab.check(
            isinstance(exc, ConnectionResetError),
            f"connection {k + 2}'s request was answered with RST",
        )
    exchange(lab, c4, s4, "request after the idle time")
    c4.close()
    lab.expect(s4.recv(10) == b"", "the server saw the client's FIN on connection 4")
    s4.close()
    time.sleep(0.2)
    sv = lab.ss("server", "after the resets")
    lab.check(
        sorted(r.state for r in sv).count("ESTAB") == 2,
        "the server still holds connections 2 and 3 ESTABLISHED: it never saw a RST",
    )
    for _, s in conns[:2]:
        s.setblocking(False)
        try:
            got = s.recv(100)
        except BlockingIOError:
            got = None
        lab.check(got is None, "the server application saw nothing: no request, no error")
