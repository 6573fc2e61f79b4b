"""One lab run: namespaces joined by veth (optionally through the relay), capture, story.

Two topologies, both invisible to the host:

* direct: ``client ns [c0] ==veth== [s0] server ns`` on one subnet;
* relay:  ``client ns [c0] ==veth== [m0] middle ns [m1] ==veth== [s0] server ns``,
  where policy routing in the middle namespace hands every packet to the
  impairment relay's TUN device before it is forwarded.

The capture always runs on the client's veth, so a recording shows what the
client host would see with tcpdump.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tcpwhy.capture.live import LiveCapture
from tcpwhy.errors import ScenarioFailed
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.relay import Relay

CLIENT_IF = "c0"
SERVER_IF = "s0"


def _veth(a_if: str, a_ns: str, b_if: str, b_ns: str) -> None:
    """A veth pair whose ends are created straight in their namespaces."""
    nsmod.run(
        [
            "ip",
            "link",
            "add",
            a_if,
            "netns",
            a_ns,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b_ns,
        ]
    )


@dataclass
class Options:
    """Knobs shared by all scenarios; None means the scenario's own default."""

    ipv6: bool = False
    port: int = 8080
    count: int | None = None
    idle: float | None = None
    timeout: float | None = None
    delay: float | None = None


@dataclass
class SockRow:
    """One line of `ss -tan` as the kernel reported it."""

    state: str
    recv_q: int
    send_q: int
    local: str
    peer: str
    extra: str = ""

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])

    @property
    def peer_port(self) -> int:
        return int(self.peer.rsplit(":", 1)[1])

    def __str__(self) -> str:
        text = f"{self.state:<10} {self.recv_q:>3} {self.send_q:>3}  {self.local} → {self.peer}"
        return f"{text}  {self.extra}" if self.extra else text


@dataclass
class Event:
    t: float
    actor: str
    text: str


@dataclass
class Story:
    """What each party saw, in order, with times relative to the start."""

    t0: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, actor: str, text: str) -> None:
        with self._lock:
            self.events.append(Event(time.monotonic() - self.t0, actor, text))

    def render(self) -> str:
        return "\n".join(f"  +{e.t:7.3f}s  {e.actor:<7} {e.text}" for e in self.events)


def _mac(ns: str, ifname: str) -> str:
    out = nsmod.run(["ip", "-o", "link", "show", ifname], ns)
    return out.split("link/ether", 1)[1].split()[0]


def describe_exc(exc: BaseException) -> str:
    name = type(exc).__name__
    return f"{name}: {exc}" if str(exc) else name


class Lab:
    """Everything one scenario run creates; `close()` removes all of it."""

    def __init__(self, opts: Options, *, relay: bool = False, capture_path: str | None = None):
        self.opts = opts
        self.family = socket.AF_INET6 if opts.ipv6 else socket.AF_INET
        self.story = Story()
        self.states: list[tuple[str, SockRow]] = []
        self.client_ns = nsmod.new_name("c")
        self.server_ns = nsmod.new_name("s")
        self.middle_ns: str | None = nsmod.new_name("m") if relay else None
        self.relay: Relay | None = None
        self.capture: LiveCapture | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._created: list[str] = []
        self._closed = False
        try:
            self._build()
            if capture_path:
                with nsmod.entered(self.client_ns):
                    sock = LiveCapture.open_socket(CLIENT_IF)
                self.capture = LiveCapture(sock, capture_path).start()
        except BaseException:
            self.close()
            raise

    # -- topology ---------------------------------------------------------------------------

    def _addr(self, net: int, host: int) -> str:
        if self.opts.ipv6:
            return f"fd00:77:{net}::{host}"
        return f"10.77.{net}.{host}"

    def _plen(self) -> str:
        return "/64" if self.opts.ipv6 else "/24"

    def _add_addr(self, ns: str, ifname: str, addr: str) -> None:
        extra = ["nodad"] if self.opts.ipv6 else []
        nsmod.run(["ip", "addr", "add", addr + self._plen(), "dev", ifname, *extra], ns)

    def _build(self) -> None:
        names = [self.client_ns, self.server_ns] + ([self.middle_ns] if self.middle_ns else [])
        for name in names:
            nsmod.create_namespace(name)
            self._created.append(name)
        c, s, m = self.client_ns, self.server_ns, self.middle_ns
        v6 = ["-6"] if self.opts.ipv6 else []
        if m is None:
            _veth(CLIENT_IF, c, SERVER_IF, s)
            self.client_ip, self.server_ip = self._addr(0, 1), self._addr(0, 2)
            self._add_addr(c, CLIENT_IF, self.client_ip)
            self._add_addr(s, SERVER_IF, self.server_ip)
        else:
            _veth(CLIENT_IF, c, "m0", m)
            _veth(SERVER_IF, s, "m1", m)
            self.client_ip, self.server_ip = self._addr(1, 2), self._addr(2, 2)
            self._add_addr(c, CLIENT_IF, self.client_ip)
            self._add_addr(s, SERVER_IF, self.server_ip)
            self._add_addr(m, "m0", self._addr(1, 1))
            self._add_addr(m, "m1", self._addr(2, 1))
            for ifname in ("m0", "m1"):
                nsmod.disable_offloads(m, ifname)
                nsmod.run(["ip", "link", "set", ifname, "up"], m)
            nsmod.sysctl(
                m,
                {
                    "net.ipv4.ip_forward": 1,
                    "net.ipv6.conf.all.forwarding": 1,
                    "net.ipv4.conf.all.rp_filter": 0,
                    "net.ipv4.conf.default.rp_filter": 0,
                    "net.ipv4.conf.all.send_redirects": 0,
                },
            )
            self.relay = Relay(m, ipaddress.ip_address(self.client_ip).packed)
            nsmod.run(["ip", "link", "set", "tun0", "up"], m)
            for fam in ([], ["-6"]):
                nsmod.run(["ip", *fam, "route", "add", "default", "dev", "tun0", "table", "100"], m)
                for ifname in ("m0", "m1"):
                    nsmod.run(["ip", *fam, "rule", "add", "iif", ifname, "table", "100"], m)
            self.relay.start()
        for ns, ifname in ((c, CLIENT_IF), (s, SERVER_IF)):
            nsmod.disable_offloads(ns, ifname)
            nsmod.run(["ip", "link", "set", ifname, "up"], ns)
        if m is not None:
            nsmod.run(["ip", *v6, "route", "add", "default", "via", self._addr(1, 1)], c)
            nsmod.run(["ip", *v6, "route", "add", "default", "via", self._addr(2, 1)], s)
        self._warm_up()

    def _warm_up(self) -> None:
        """Permanent neighbour entries: no ARP/ND in the middle of a scenario, on any side."""
        c, s, m = self.client_ns, self.server_ns, self.middle_ns
        if m is None:
            pairs = [
                (c, CLIENT_IF, self.server_ip, s, SERVER_IF),
                (s, SERVER_IF, self.client_ip, c, CLIENT_IF),
            ]
        else:
            pairs = [
                (c, CLIENT_IF, self._addr(1, 1), m, "m0"),
                (m, "m0", self.client_ip, c, CLIENT_IF),
                (s, SERVER_IF, self._addr(2, 1), m, "m1"),
                (m, "m1", self.server_ip, s, SERVER_IF),
            ]
        for ns, ifname, ip, peer_ns, peer_if in pairs:
            mac = _mac(peer_ns, peer_if)
            nsmod.run(
                ["ip", "neigh", "replace", ip, "lladdr", mac, "dev", ifname, "nud", "permanent"], ns
            )

    # -- parties ----------------------------------------------------------------------------

    def ns_of(self, side: str) -> str:
        """The namespace of "client", "server" or (relay topology only) "middle"."""
        if side == "middle":
            if self.middle_ns is None:
                raise KeyError("middle: this scenario has no middle namespace")
            return self.middle_ns
        return {"client": self.client_ns, "server": self.server_ns}[side]

    def sock(self, side: str, type: int = socket.SOCK_STREAM) -> socket.socket:
        s = nsmod.socket_in(self.ns_of(side), self.family, type)
        self._sockets.append(s)
        return s

    def server_addr(self, port: int | None = None) -> tuple[str, int]:
        return (self.server_ip, self.opts.port if port is None else port)

    def listen(self, backlog: int = 128, port: int | None = None) -> socket.socket:
        s = self.sock("server")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(self.server_addr(port))
        s.listen(backlog)
        return s

    def spawn(self, fn: Callable[[], Any], name: str) -> threading.Thread:
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads.append(t)
        t.start()
        return t

    def say(self, actor: str, text: str) -> None:
        self.story.add(actor, text)

    def sysctl(self, side: str, settings: dict[str, object]) -> None:
        nsmod.sysctl(self.ns_of(side), settings)
        self.say("lab", f"{side} namespace: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    def rto_min(self, side: str, ms: int) -> None:
        """Raise the minimum retransmission timeout on one side's default route.

        A state that lasts one RTO (200 ms by default) is otherwise too short for
        `ss` to see on a loaded machine; the route is the scenario's own namespace's.
        """
        fam = ["-6"] if self.opts.ipv6 else []
        ns = self.ns_of(side)
        route = nsmod.run(["ip", *fam, "route", "show", "default"], ns).split()
        nsmod.run(["ip", *fam, "route", "change", *route, "rto_min", f"{ms}ms"], ns)
        self.say("lab", f"{side} namespace: default route rto_min {ms} ms")

    def nft(self, side: str, ruleset: str, what: str) -> None:
        nsmod.nft(self.ns_of(side), ruleset)
        self.say("lab", f"{side} namespace nft: {what}")

    # -- kernel views ----------------------------------------------------------------------

    def ss(self, side: str, note: str = "", port: int | None = None) -> list[SockRow]:
        """Socket states on one side touching the scenario's port (LISTEN rows left out)."""
        port = self.opts.port if port is None else port
        out = nsmod.run(["ss", "-Htano"], self.ns_of(side))
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            row = SockRow(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4])
            row.extra = " ".join(parts[5:])
            if row.state == "LISTEN" or port not in (row.local_port, row.peer_port):
                continue
            rows.append(row)
        label = f"ss on {side}" + (f" ({note})" if note else "")
        if not rows:
            self.say("kernel", f"{label}: no sockets")
        for row in rows:
            self.states.append((side, row))
            self.say("kernel", f"{label}: {row}")
        return rows

    def ss_summary(self, side: str, note: str = "", port: int | None = None) -> dict[str, int]:
        """Counts per state (for scenarios with many sockets), with one sample row each."""
        port = self.opts.port if port is None else port
        out = nsmod.run(["ss", "-Htano"], self.ns_of(side))
        counts: dict[str, int] = {}
        sample: dict[str, SockRow] = {}
        for line in out.splitlines():
            p = line.split()
            if len(p) < 5 or p[0] == "LISTEN":
                continue
            row = SockRow(p[0], int(p[1]), int(p[2]), p[3], p[4], " ".join(p[5:]))
            if port not in (row.local_port, row.peer_port):
                continue
            counts[row.state] = counts.get(row.state, 0) + 1
            sample.setdefault(row.state, row)
            self.states.append((side, row))
        label = f"ss on {side}" + (f" ({note})" if note else "")
        if not counts:
            self.say("kernel", f"{label}: no sockets")
        for state, n in counts.items():
            self.say("kernel", f"{label}: {n} × {state}, e.g. {sample[state]}")
        return counts

    def listen_row(self, port: int | None = None) -> SockRow | None:
        """The LISTEN row: Recv-Q is the accept queue's length, Send-Q its limit."""
        port = self.opts.port if port is None else port
        out = nsmod.run(["ss", "-Hltn"], self.server_ns)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[3].rsplit(":", 1)[1] == str(port):
                return SockRow(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4])
        return None

    def nstat(self, side: str, *names: str) -> dict[str, int]:
        """Absolute TCP counters of the namespace (each lab namespace starts from zero)."""
        out = nsmod.run(["nstat", "-a", "-z", "-s", *names], self.ns_of(side))
        vals = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in names:
                vals[parts[0]] = int(parts[1])
        return vals

    def wait_state(
        self, side: str, state: str, timeout: float = 5.0, count: int = 1, port: int | None = None
    ) -> list[SockRow]:
        """Poll ss until `count` sockets are in `state`; the rows found are returned unlogged."""
        port = self.opts.port if port is None else port
        deadline = time.monotonic() + timeout
        while True:
            out = nsmod.run(["ss", "-Htan"], self.ns_of(side))
            rows = []
            for line in out.splitlines():
                p = line.split()
                if len(p) >= 5 and p[0] == state:
                    row = SockRow(p[0], int(p[1]), int(p[2]), p[3], p[4])
                    if port in (row.local_port, row.peer_port):
                        rows.append(row)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)

    def expect_state(
        self, side: str, state: str, reason: str, timeout: float = 5.0, port: int | None = None
    ) -> list[SockRow]:
        """`wait_state`, failing with `reason`: what ss shows on both sides then goes into the
        story first, since a state that never came is explained by the one the socket is in."""
        rows = self.wait_state(side, state, timeout=timeout, port=port)
        if not rows:
            for s in ("client", "server"):
                self.ss(s, f"waiting for {state} on {side}", port=port)
        self.expect(rows, reason)
        return rows

    def expect(self, cond: object, reason: str) -> None:
        if not cond:
            self.say("lab", f"NOT AS DESIGNED: {reason}")
            raise ScenarioFailed("lab", reason)

    def check(self, cond: object, what: str) -> None:
        """An expectation that also goes into the story when it holds."""
        self.expect(cond, what + " — not observed")
        self.say("check", what)

    # -- teardown ---------------------------------------------------------------------------

    def stop_capture(self) -> None:
        if self.capture is not None:
            time.sleep(0.05)
            self.capture.stop()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(timeout=2)
        if self.capture is not None:
            with contextlib.suppress(Exception):
                self.capture.stop()
        if self.relay is not None:
            self.relay.close()
        for name in self._created:
            nsmod.delete_namespace(name)
