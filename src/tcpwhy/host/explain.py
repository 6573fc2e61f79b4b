"""Why a set of sockets looks wrong: the lifecycle reading behind each pile-up.

Each rule names the party that has to act (which process has not called
close(), which peer never sent its FIN) because that is what an engineer
fixes; counts alone do not say it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tcpwhy.host.sockets import STATES, Socket
from tcpwhy.host.sysctl import Values, in_ports, port_set

POOL_MIN = 3  # CLOSE_WAIT from one client process to one server port before calling it a pool
SYN_RECV_MIN = 16
SYN_SENT_MIN = 3
TW_BUCKETS_WARN = 0.8
TW_PORTS_WARN = 0.5
ORPHAN_PILE_MIN = 10


TITLES = {
    "close_wait": "CLOSE_WAIT: peer closed, the process has not called close()",
    "close_wait_unaccepted": "CLOSE_WAIT before accept(): clients gave up waiting",
    "stale_keepalive_pool": "CLOSE_WAIT in a client pool: server-closed keep-alive connections held",
    "fin_wait2_orphans": "FIN_WAIT_2 orphans: the peer never closed (tcp_fin_timeout)",
    "fin_wait2_half_closed": "FIN_WAIT_2 half-closed: shutdown(SHUT_WR), waiting for the peer",
    "syn_recv_pileup": "SYN_RECV piling up",
    "syn_sent_unanswered": "SYN_SENT unanswered",
    "time_wait_buckets": "TIME_WAIT near tcp_max_tw_buckets",
    "time_wait_ports": "TIME_WAIT near ephemeral-port exhaustion",
    "fin_wait_1_orphans": "FIN_WAIT_1 orphans: our FIN not acknowledged",
    "last_ack_orphans": "LAST_ACK orphans: the peer is gone",
    "closing_orphans": "CLOSING orphans",
    "accept_queue_full": "accept queue full",
    "listener_in_ephemeral_range": "listening port inside the ephemeral range",
    "time_wait_on_listener": "TIME_WAIT on a listening port: a restart needs SO_REUSEADDR",
}


@dataclass
class Finding:
    severity: str  # "warning" | "info"
    kind: str  # stable identifier, e.g. "close_wait", "stale_keepalive_pool"
    subject: str  # who/what: "pid 812 (python3) → 10.0.0.5:5432"
    count: int
    why: str  # the reading and what to do about it

    @property
    def title(self) -> str:
        return TITLES.get(self.kind, self.kind.replace("_", " "))

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "title": self.title,
            "subject": self.subject,
            "count": self.count,
            "why": self.why,
        }


@dataclass
class Listener:
    sock: Socket
    syn_recv: int = 0
    somaxconn: int | None = None
    limit_known: bool = True  # /proc/net/tcp does not carry the accept-queue limit
    warnings: list[str] = field(default_factory=list)

    @property
    def accept_queue(self) -> int:
        return self.sock.recv_q

    @property
    def accept_queue_max(self) -> int | None:
        return self.sock.send_q if self.limit_known else None

    @property
    def full(self) -> bool:
        """The kernel's own test (sk_acceptq_is_full): the queue holds limit+1 when full."""
        m = self.accept_queue_max
        return m is not None and self.accept_queue > m

    @property
    def at_limit(self) -> bool:
        m = self.accept_queue_max
        return m is not None and self.accept_queue > 0 and self.accept_queue >= max(1, int(m * 0.8))

    @property
    def status(self) -> str:
        if self.full:
            return "full"
        if self.at_limit:
            return "filling"
        return "ok"

    def backlog_explained(self) -> str:
        m = self.accept_queue_max
        if m is None:
            return "limit not available from /proc/net/tcp (sock_diag needed)"
        if self.somaxconn is None:
            return f"limit {m} = min(listen() backlog, net.core.somaxconn)"
        if m == self.somaxconn:
            return (
                f"limit {m} = net.core.somaxconn: the process asked for {m} or more in listen() and the "
                "kernel capped it; raising it needs both somaxconn and the application's backlog"
            )
        if m < self.somaxconn:
            advice = "; raise it in the application" if self.full or self.at_limit else ""
            return (
                f"limit {m} = the backlog the process passed to listen() "
                f"(net.core.somaxconn {self.somaxconn} is higher){advice}"
            )
        return f"limit {m} is above today's somaxconn {self.somaxconn}: somaxconn was lowered after listen()"

    def as_json(self) -> dict[str, Any]:
        s = self.sock
        return {
            "local": s.local,
            "pid": s.pid,
            "process": s.process,
            "owners": [{"pid": o.pid, "process": o.process, "fd": o.fd} for o in s.owners],
            "accept_queue": self.accept_queue,
            "accept_queue_max": self.accept_queue_max,
            "syn_recv": self.syn_recv,
            "somaxconn": self.somaxconn,
            "status": self.status,
            "backlog": self.backlog_explained(),
            "warnings": self.warnings,
        }


def sysint(values: Values | None, key: str) -> int | None:
    if not values:
        return None
    v = values.get(key)
    try:
        return int(v.split()[0]) if v else None
    except ValueError:
        return None


def owner_label(s: Socket) -> str:
    if s.owners:
        return f"pid {s.pid} ({s.process})"
    if s.inode:
        return "owner not visible"
    if s.state in ("ESTABLISHED", "CLOSE_WAIT"):
        return "not accepted yet (in an accept queue)"
    if s.state == "SYN_RECV":
        return "half-open (handshake in progress)"
    return "no process (closed, kernel-held)"


def age(ms: int | None) -> str:
    if ms is None:
        return "unknown"
    sec = ms / 1000
    if sec < 120:
        return f"{sec:.0f} s"
    if sec < 7200:
        return f"{sec / 60:.0f} min"
    return f"{sec / 3600:.1f} h"


def _addr_match(listen_addr: str, addr: str) -> bool:
    return (
        listen_addr in ("0.0.0.0", "::") or listen_addr == addr or addr.endswith(":" + listen_addr)
    )


def listeners(
    sockets: list[Socket], sysctls: Values | None, limit_known: bool = True
) -> list[Listener]:
    somax = sysint(sysctls, "net.core.somaxconn")
    out = []
    syn = [s for s in sockets if s.state == "SYN_RECV"]
    for s in sockets:
        if s.state != "LISTEN":
            continue
        lst = Listener(s, somaxconn=somax, limit_known=limit_known)
        lst.syn_recv = sum(
            1
            for r in syn
            if r.local_port == s.local_port and _addr_match(s.local_addr, r.local_addr)
        )
        if lst.full:
            lst.warnings.append(
                f"accept queue full ({lst.accept_queue} waiting, limit {lst.accept_queue_max}): new handshakes "
                "are dropped (ListenOverflows) — the process is not calling accept() fast enough"
            )
        elif lst.at_limit:
            lst.warnings.append(
                f"accept queue at {lst.accept_queue}/{lst.accept_queue_max}: close to overflowing"
            )
        out.append(lst)
    out.sort(key=lambda x: (x.sock.local_port, x.sock.family, x.sock.local_addr))
    return out


def state_counts(sockets: Iterable[Socket]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for s in sockets:
        counts[s.state] = counts.get(s.state, 0) + 1
    return counts


def _group(items: Iterable[Socket], key: Callable[[Socket], Any]) -> dict[Any, list[Socket]]:
    out: dict[Any, list[Socket]] = defaultdict(list)
    for s in items:
        out[key(s)].append(s)
    return out


def _in_range(port: int, sysctls: Values | None) -> bool:
    rng = (sysctls or {}).get("net.ipv4.ip_local_port_range")
    if not rng:
        from tcpwhy.tcp.sides import EPHEMERAL_FROM

        return port >= EPHEMERAL_FROM
    lo, hi = (int(x) for x in rng.split()[:2])
    return lo <= port <= hi


def analyze(
    sockets: list[Socket],
    sysctls: Values | None = None,
    listen_ports: set[int] | None = None,
    all_sockets: list[Socket] | None = None,
    limits_known: bool = True,
) -> list[Finding]:
    """Findings for `sockets`; `all_sockets` gives namespace-wide context when analysing a group."""
    everything = all_sockets if all_sockets is not None else sockets
    if listen_ports is None:
        listen_ports = {s.local_port for s in everything if s.state == "LISTEN"}
    out: list[Finding] = []
    out += _close_wait(sockets, listen_ports)
    out += _fin_wait2(sockets, sysctls)
    out += _syn_recv(sockets, sysctls, everything, limits_known)
    out += _syn_sent(sockets)
    out += _time_wait(sockets, sysctls, everything, listen_ports)
    out += _orphans(sockets)
    out += _listen_ports(sockets, sysctls)
    for lst in listeners(sockets, sysctls, limits_known):
        if lst.full:
            out.append(
                Finding(
                    "warning",
                    "accept_queue_full",
                    f"listener {lst.sock.local} {owner_label(lst.sock)}",
                    lst.accept_queue,
                    lst.warnings[0] + "; " + lst.backlog_explained(),
                )
            )
    out.sort(key=lambda f: (f.severity != "warning", -f.count))
    return out


def _close_wait(sockets: list[Socket], listen_ports: set[int]) -> list[Finding]:
    out = []
    cw = [s for s in sockets if s.state == "CLOSE_WAIT"]
    unaccepted = [s for s in cw if s.inode == 0]
    if unaccepted:
        by_port = _group(unaccepted, lambda s: s.local)
        for local, group in sorted(by_port.items()):
            out.append(
                Finding(
                    "warning",
                    "close_wait_unaccepted",
                    f"listener {local}",
                    len(group),
                    f"{len(group)} connection(s) still waiting in the accept queue were already closed by "
                    "their client (it gave up before the server called accept()): the server accepts too slowly",
                )
            )
    held = [s for s in cw if s.inode != 0]
    for (label, remote), group in sorted(
        _group(
            held,
            # a server's CLOSE_WAITs come from many clients: one finding per served port
            lambda s: (
                owner_label(s),
                f"clients of :{s.local_port}" if s.local_port in listen_ports else s.remote,
            ),
        ).items(),
        key=lambda kv: -len(kv[1]),
    ):
        oldest = max(
            (s.peer_silent_ms for s in group if s.peer_silent_ms is not None), default=None
        )
        since = (
            f"; oldest: peer silent for {age(oldest)} (≈ time since its FIN)"
            if oldest is not None
            else ""
        )
        client_side = [s for s in group if s.local_port not in listen_ports]
        if len(client_side) >= POOL_MIN:
            out.append(
                Finding(
                    "warning",
                    "stale_keepalive_pool",
                    f"{label} → {remote}",
                    len(group),
                    f"{len(group)} client connections to {remote} in CLOSE_WAIT: the server closed them (idle "
                    "keep-alive timeout) and this process still holds them — a connection pool keeping "
                    "server-closed sockets. Set the pool's idle timeout below the server's keep-alive "
                    f"timeout, or validate connections before reuse{since}",
                )
            )
            continue
        server_side = remote.startswith("clients of ")
        side = (
            "the peer (client) closed, this server has not: a handler that returns without close(), or a leak"
            if server_side
            else "the server closed; this client has not closed its end"
        )
        out.append(
            Finding(
                "warning",
                "close_wait",
                f"{label} ← {remote}" if server_side else f"{label} → {remote}",
                len(group),
                f"{len(group)} socket(s) in CLOSE_WAIT: this process received the peer's FIN and has not "
                f"called close(); {side}{since}",
            )
        )
    return out


def _fin_wait2(sockets: list[Socket], sysctls: Values | None) -> list[Finding]:
    out = []
    fw2 = [s for s in sockets if s.state == "FIN_WAIT_2"]
    fin_timeout = sysint(sysctls, "net.ipv4.tcp_fin_timeout")
    ft = f"{fin_timeout} s" if fin_timeout is not None else "60 s by default"
    orphans = [s for s in fw2 if s.inode == 0]
    for remote, group in sorted(
        _group(orphans, lambda s: s.remote_ip).items(), key=lambda kv: -len(kv[1])
    ):
        out.append(
            Finding(
                "warning" if len(group) >= ORPHAN_PILE_MIN else "info",
                "fin_wait2_orphans",
                f"closed sockets → {remote}",
                len(group),
                f"{len(group)} FIN_WAIT_2 orphan(s): we closed, the peer ACKed our FIN but never sent its own "
                f"(its application has not closed: CLOSE_WAIT on its side); the kernel drops them after "
                f"tcp_fin_timeout = {ft}",
            )
        )
    held = [s for s in fw2 if s.inode != 0]
    for label, group in sorted(_group(held, owner_label).items()):
        out.append(
            Finding(
                "info",
                "fin_wait2_half_closed",
                label,
                len(group),
                f"{len(group)} half-closed socket(s) in FIN_WAIT_2: the process called shutdown(SHUT_WR) and "
                "waits for the peer's FIN; no timeout applies while it keeps the socket open",
            )
        )
    return out


def _syn_recv(
    sockets: list[Socket], sysctls: Values | None, everything: list[Socket], limits_known: bool
) -> list[Finding]:
    out = []
    backlog = sysint(sysctls, "net.ipv4.tcp_max_syn_backlog")
    threshold = SYN_RECV_MIN if backlog is None else min(SYN_RECV_MIN, max(2, backlog // 4))
    full_ports = {
        lst.sock.local_port
        for lst in listeners(everything, sysctls, limits_known)
        if lst.full or lst.at_limit
    }
    for port, group in sorted(
        _group([s for s in sockets if s.state == "SYN_RECV"], lambda s: s.local_port).items()
    ):
        retrans = max(s.retrans for s in group)
        if len(group) < threshold and (retrans < 2 or len(group) < 2):
            continue
        if port in full_ports:
            cause = (
                "the listener's accept queue is full, so the clients' final ACKs are dropped and the "
                "handshakes stay half-open"
            )
        else:
            cause = (
                "a SYN flood (spoofed sources never answer) or clients whose final ACK is slow or lost; "
                "check SyncookiesSent and TCPReqQFullDrop in `tcpwhy host counters`"
            )
        out.append(
            Finding(
                "warning",
                "syn_recv_pileup",
                f"port {port}",
                len(group),
                f"{len(group)} half-open connection(s) in SYN_RECV (SYN-ACK retransmitted up to {retrans}×): {cause}",
            )
        )
    return out


def _syn_sent(sockets: list[Socket]) -> list[Finding]:
    out = []
    for remote, group in sorted(
        _group([s for s in sockets if s.state == "SYN_SENT"], lambda s: s.remote).items()
    ):
        retrans = max(s.retrans for s in group)
        if len(group) < SYN_SENT_MIN and retrans < 2:
            continue
        out.append(
            Finding(
                "warning",
                "syn_sent_unanswered",
                f"connects → {remote}",
                len(group),
                f"{len(group)} connect() attempt(s) to {remote} unanswered (SYN retransmitted up to {retrans}×): "
                "the server's accept queue overflows (its ListenOverflows), a firewall drops SYNs, or the "
                "address is dead",
            )
        )
    return out


def holds_tw_bucket(s: Socket) -> bool:
    """A socket the kernel keeps as a timewait mini-socket, counted against tcp_max_tw_buckets.

    TIME_WAIT always; FIN_WAIT_2 when the process has closed and tcp_fin_timeout is at
    most 60 s: such an orphan is moved to a timewait mini-socket (timer "timewait") too.
    """
    return s.state == "TIME_WAIT" or (s.state == "FIN_WAIT_2" and s.timer == "timewait")


def _time_wait(
    sockets: list[Socket], sysctls: Values | None, everything: list[Socket], listen_ports: set[int]
) -> list[Finding]:
    out: list[Finding] = []
    tw = [s for s in sockets if s.state == "TIME_WAIT"]
    if not any(holds_tw_bucket(s) for s in sockets):
        return out
    buckets = sysint(sysctls, "net.ipv4.tcp_max_tw_buckets")
    held = [s for s in everything if holds_tw_bucket(s)]
    total = len(held)
    if buckets and total >= TW_BUCKETS_WARN * buckets:
        fw2 = sum(1 for s in held if s.state == "FIN_WAIT_2")
        what = (
            f"{total} TIME_WAIT sockets"
            if not fw2
            else f"{total} timewait sockets ({total - fw2} TIME_WAIT, {fw2} FIN_WAIT_2 orphans)"
        )
        also = " and new FIN_WAIT_2 orphans are dropped at once" if fw2 else ""
        out.append(
            Finding(
                "warning",
                "time_wait_buckets",
                "namespace",
                total,
                f"{what}, {100 * total // buckets}% of tcp_max_tw_buckets = {buckets}: "
                f"beyond it connections close without TIME_WAIT{also} (TCPTimeWaitOverflow); "
                "reuse connections",
            )
        )
    rng = (sysctls or {}).get("net.ipv4.ip_local_port_range")
    ports = None
    if rng:
        lo, hi = (int(x) for x in rng.split()[:2])
        ports = hi - lo + 1
    client_tw = [
        s for s in tw if s.local_port not in listen_ports and _in_range(s.local_port, sysctls)
    ]
    for remote, group in _group(client_tw, lambda s: (s.local_addr, s.remote)).items():
        if ports and len(group) >= TW_PORTS_WARN * ports:
            out.append(
                Finding(
                    "warning",
                    "time_wait_ports",
                    f"{remote[0]} → {remote[1]}",
                    len(group),
                    f"{len(group)} TIME_WAIT sockets toward {remote[1]} use {100 * len(group) // ports}% of the "
                    f"{ports} ephemeral ports: new connect()s to it will fail with EADDRNOTAVAIL; keep "
                    "connections alive, widen ip_local_port_range, or enable tcp_tw_reuse",
                )
            )
    return out


def _listen_ports(sockets: list[Socket], sysctls: Values | None) -> list[Finding]:
    """Why a restart of a listener would fail with EADDRINUSE (bind() sends no packet, so
    only the host shows it): its port is one connect() may take, or its own TIME_WAIT
    sockets hold it."""
    out: list[Finding] = []
    rng = (sysctls or {}).get("net.ipv4.ip_local_port_range")
    reserved = port_set((sysctls or {}).get("net.ipv4.ip_local_reserved_ports"))
    tw = [s for s in sockets if s.state == "TIME_WAIT"]
    seen: set[tuple[str, int]] = set()
    for ls in sorted(
        (s for s in sockets if s.state == "LISTEN"), key=lambda s: (s.local_port, s.local_addr)
    ):
        port = ls.local_port
        in_range = rng and _in_range(port, sysctls) and not in_ports(port, reserved)
        held = [s for s in tw if s.local_port == port and _addr_match(ls.local_addr, s.local_addr)]
        found: list[tuple[str, int, str]] = []
        if in_range:
            found.append(
                (
                    "listener_in_ephemeral_range",
                    1,
                    f"port {port} lies inside ip_local_port_range ({rng}) and is not in "
                    "ip_local_reserved_ports: a client connect() on this host may take it "
                    "as its source port, and a restart of this service then fails with "
                    "EADDRINUSE (SO_REUSEADDR does not help); reserve it: "
                    f"sysctl net.ipv4.ip_local_reserved_ports={port} (add to the list)",
                )
            )
        if held:
            found.append(
                (
                    "time_wait_on_listener",
                    len(held),
                    f"{len(held)} TIME_WAIT sockets on listening port {port} (this side closed "
                    "those connections first; each stays 60 s): a restart whose new socket "
                    "lacks SO_REUSEADDR would fail now with EADDRINUSE, as would one with it if "
                    "this listener does not set it (a TIME_WAIT socket keeps its listener's "
                    "SO_REUSEADDR); set SO_REUSEADDR on the listening socket",
                )
            )
        for kind, count, why in found:
            # one finding of each kind per port, from its first listener
            if (kind, port) not in seen:
                seen.add((kind, port))
                out.append(
                    Finding("info", kind, f"listener {ls.local} {owner_label(ls)}", count, why)
                )
    return out


def _orphans(sockets: list[Socket]) -> list[Finding]:
    out = []
    for state, reading in (
        (
            "FIN_WAIT_1",
            "our FIN is not acknowledged: the peer is gone or its window is zero (tcp_orphan_retries)",
        ),
        (
            "LAST_ACK",
            "we answered the peer's FIN with ours and its final ACK never came: the peer is gone",
        ),
        ("CLOSING", "both sides closed at once and our FIN is not acknowledged"),
    ):
        group = [s for s in sockets if s.state == state and s.inode == 0]
        if len(group) >= ORPHAN_PILE_MIN:
            out.append(
                Finding(
                    "warning",
                    f"{state.lower()}_orphans",
                    "closed sockets",
                    len(group),
                    f"{len(group)} orphaned {state} sockets: {reading}",
                )
            )
    return out


def group_key(
    by: str, sockets: list[Socket] | None = None, sysctls: Values | None = None
) -> Callable[[Socket], str]:
    """Group keys; for ports, outgoing connections go by the server port they reach.

    One group per ephemeral port would split a pile-up of one client into
    hundreds of single-socket groups and hide it.
    """
    if by == "port":
        listening = {s.local_port for s in sockets or [] if s.state == "LISTEN"}

        def port(s: Socket) -> str:
            if (
                s.local_port in listening
                or not _in_range(s.local_port, sysctls)
                or not s.remote_port
            ):
                return str(s.local_port)
            return f"outgoing → :{s.remote_port}"

        return port
    if by == "remote":
        return lambda s: "(listening)" if s.state == "LISTEN" else s.remote
    if by == "process":
        return owner_label
    raise ValueError(by)
