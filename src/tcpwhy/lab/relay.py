"""Impairment relay: a TUN device in a middle namespace and a Python loop that forwards
packets between client and server with a programmable per-packet verdict.

The kernel has no netem here, and some incidents need precise timing (FINs that
cross, the last ACK lost exactly once). Policy routing in the middle namespace
sends every packet arriving from either veth into the TUN device; the relay
reads it, asks the current rule what to do, and writes it back, after which the
kernel routes it on to the other side.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tcpwhy.decode.table import ACK, FIN, PSH, RST, SYN
from tcpwhy.lab import ns as nsmod
from tcpwhy.lab.packets import internet_checksum, transport_checksum

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

PASS = "pass"
DROP = "drop"
HOLD = "hold"
RELEASE = "release"  # hold this one too, then send everything held, in order
PASS_RELEASE = "pass-release"  # send this one, then everything held
INJECT = "inject"  # logged for a packet the relay made itself (`Relay.inject`)


@dataclass(frozen=True)
class Seg:
    """The TCP facts a rule decides on."""

    to_server: bool
    flags: int
    seq: int
    ack: int
    payload_len: int
    sport: int
    dport: int
    ttl: int = 0  # IPv4 TTL or IPv6 hop limit as the relay received it

    @property
    def pure_ack(self) -> bool:
        return self.flags & (SYN | FIN | RST) == 0 and self.payload_len == 0

    def describe(self) -> str:
        names = [n for b, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P")) if self.flags & b]
        if self.flags & ACK:
            names.append(".")
        arrow = "client→server" if self.to_server else "server→client"
        return f"{arrow} [{''.join(names)}] seq={self.seq} ack={self.ack} len={self.payload_len}"


# A rule returns PASS, DROP, HOLD (until release()), RELEASE, PASS_RELEASE or a delay in seconds.
Verdict = str | float
Rule = Callable[[Seg], Verdict]


def parse(pkt: bytes, client_addr: bytes) -> Seg | None:
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != 6:
            return None
        src, total, off, ttl = pkt[12:16], int.from_bytes(pkt[2:4], "big"), ihl, pkt[8]
    elif v == 6:
        if pkt[6] != 6:
            return None
        src, total, off, ttl = pkt[8:24], 40 + int.from_bytes(pkt[4:6], "big"), 40, pkt[7]
    else:
        return None
    sport, dport, seq, ack, doff, flags = struct.unpack_from("!HHIIBB", pkt, off)
    hl = (doff >> 4) * 4
    return Seg(src == client_addr, flags, seq, ack, total - off - hl, sport, dport, ttl)


def build_rst(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ttl: int) -> bytes:
    """A bare RST (no ACK) from src:sport to dst:dport with sequence number `seq`: what a
    kernel sends for a segment of a connection it does not know (RFC 9293 3.10.7.1), here
    forged by a box on the path. IPv4 or IPv6 by the address length."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, RST, 0, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", transport_checksum(src, dst, 6, tcp)) + tcp[18:]
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, 6, 0, src, dst)
        return ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:] + tcp
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, ttl, src, dst) + tcp


@dataclass
class RelayLog:
    entries: list[tuple[float, Seg, str]] = field(default_factory=list)

    def verdicts(self, what: str) -> list[Seg]:
        return [s for _, s, v in self.entries if v == what]

    def counts(self) -> dict[str, int]:
        """What the relay did, as a recording's ground truth: segments passed at once, delayed,
        dropped, held, and injected (made by the relay itself)."""
        out = {"passed": 0, "delayed": 0, "dropped": 0, "held": 0, "injected": 0}
        for _, _, v in self.entries:
            if v.startswith("delay"):
                out["delayed"] += 1
            elif v == DROP:
                out["dropped"] += 1
            elif v in (HOLD, RELEASE):
                out["held"] += 1
            elif v == INJECT:
                out["injected"] += 1
            else:
                out["passed"] += 1
        return out


class Relay:
    """Forwards packets through `tun0` in `ns`; `rule` may be swapped at any time."""

    def __init__(self, ns: str, client_addr: bytes, ifname: str = "tun0") -> None:
        self.ns = ns
        self.ifname = ifname
        self.client_addr = client_addr
        self.rule: Rule = lambda seg: PASS
        self.log = RelayLog()
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, bytes]] = []
        self._held: list[bytes] = []
        self._n = 0
        self._stop = threading.Event()
        with nsmod.entered(ns):
            self._fd = os.open("/dev/net/tun", os.O_RDWR)
        ifr = struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(self._fd, TUNSETIFF, ifr)
        self._thread = threading.Thread(target=self._loop, name="relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def release(self) -> int:
        """Send every held packet now, in the order they arrived."""
        with self._lock:
            held, self._held = self._held, []
        for pkt in held:
            os.write(self._fd, pkt)
        return len(held)

    def inject(self, pkt: bytes, delay: float = 0.0) -> None:
        """Send a packet the relay made (`build_rst`), after `delay` seconds; safe to call
        from a rule."""
        seg = parse(pkt, self.client_addr)
        if seg is not None:
            self.log.entries.append((time.time(), seg, INJECT))
        with self._lock:
            self._n += 1
            heapq.heappush(self._timers, (time.monotonic() + delay, self._n, pkt))

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = []
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
                wait = 0.02 if not self._timers else max(0.0, min(0.02, self._timers[0][0] - now))
            for pkt in due:
                os.write(self._fd, pkt)
            r, _, _ = select.select([self._fd], [], [], wait)
            if not r:
                continue
            try:
                pkt = os.read(self._fd, 65536)
            except OSError:
                continue
            seg = parse(pkt, self.client_addr)
            try:
                verdict: Verdict = PASS if seg is None else self.rule(seg)
            except Exception as exc:  # a broken rule must fail the run, not hang it
                self.error = exc
                verdict = PASS
            if seg is not None:
                label = verdict if isinstance(verdict, str) else f"delay {verdict:g}s"
                self.log.entries.append((time.time(), seg, label))
            if verdict in (PASS, PASS_RELEASE):
                os.write(self._fd, pkt)
            elif verdict in (HOLD, RELEASE):
                with self._lock:
                    self._held.append(pkt)
            if verdict in (RELEASE, PASS_RELEASE):
                self.release()
            elif isinstance(verdict, float | int):
                with self._lock:
                    self._n += 1
                    heapq.heappush(self._timers, (time.monotonic() + float(verdict), self._n, pkt))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        os.close(self._fd)
