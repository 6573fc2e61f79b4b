"""`tcpwhy explain MESSAGE`: from an application's error text back to the wire events behind it.

Matching is by keywords and errno names, not whole strings: wording changes
across versions and runtimes. Several
meanings can match one message ("socket hang up" is Node's EOF and reset).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass
from typing import IO

from tcpwhy.diagnose import knowledge

CAPTURE = "tcpdump -ni any -s 256 -w why.pcap 'tcp port PORT'  # on the client, and on the server if you can"


@dataclass(frozen=True)
class Meaning:
    name: str
    keywords: tuple[str, ...]
    wire: str  # what happened on the wire
    kinds: tuple[tuple[str, str], ...]  # (finding kind, how to recognise it)
    capture: str
    host: tuple[str, ...]


MEANINGS: tuple[Meaning, ...] = (
    Meaning(
        "write into a connection the peer had closed (EPIPE)",
        ("broken pipe", "epipe", "write failed", "errno 32", "(32:", "send failure"),
        "The application wrote on a socket that had already received the peer's FIN (it was "
        "in CLOSE_WAIT) and then the peer's RST, or after its own shutdown. Linux reports a "
        "RST that reaches a CLOSE_WAIT socket as EPIPE, not ECONNRESET.",
        (
            (
                "stale-keepalive-reuse",
                "a pooled connection idle for longer than the server's "
                "idle timeout; the request acknowledges the server's FIN; RST answers it",
            ),
            (
                "data-after-fin",
                "any other writer that keeps writing after the peer's FIN, e.g. a "
                "server writing a late response after the client timed out and closed",
            ),
            (
                "close-wait-leak",
                "the writer held the connection in CLOSE_WAIT for a long time before writing",
            ),
        ),
        CAPTURE,
        (
            "ss -tanpo state close-wait  # many CLOSE-WAIT to one server port from the pool",
            "nstat -az TcpOutRsts TcpExtTCPAbortOnData  # on the peer, sample twice",
        ),
    ),
    Meaning(
        "end-of-file on a reused connection before any response",
        (
            "remotedisconnected",
            "remote end closed",
            "nohttpresponse",
            "failed to respond",
            "eof",
            "server closed idle connection",
            "socket hang up",
            "unexpected end of stream",
            "empty reply",
            "prematurely closed",
            "other side closed",
            "serverdisconnected",
            "connection aborted",
            "connection died",
        ),
        "The client read end-of-file (the server's FIN) where it expected a response: the "
        "server had closed the pooled connection, usually because it was idle too long.",
        (
            (
                "stale-keepalive-reuse",
                "the request's ACK number covers the server's FIN: the "
                "client had seen the close before it wrote (fix: shorter client idle timeout)",
            ),
            (
                "keepalive-race",
                "the request does not acknowledge the FIN: they crossed in "
                "flight, at exactly the server's idle timeout (fix: timeout ordering, retries)",
            ),
            (
                "data-after-fin",
                "not a pool: a server that closed early (crash, limit reached, "
                "keepalive_requests) while the client still sent",
            ),
        ),
        CAPTURE,
        (
            "ss -tanpo state close-wait  # on the client: pooled sockets the server closed",
            "server config: keepalive_timeout / KeepAliveTimeout / IdleTimeout vs the client's "
            "pool idle timeout",
        ),
    ),
    Meaning(
        "RST on an established connection (ECONNRESET)",
        (
            "connection reset",
            "econnreset",
            "errno 104",
            "(104:",
            "recv failure",
            "reset by peer",
            "socket hang up",
        ),
        "A RST arrived while the socket was ESTABLISHED (it had not received a FIN): the peer "
        "aborted, had no such connection any more, or a middlebox reset it.",
        (
            (
                "keepalive-race",
                "on a pooled connection right at the server's idle timeout: "
                "request and FIN crossed",
            ),
            (
                "half-open-reset",
                "after an idle period the peer answers with a bare RST: it "
                "restarted or lost the connection without a FIN",
            ),
            (
                "abortive-close",
                "[R.] from the peer with its own next sequence number: close() "
                "with unread data or SO_LINGER 0",
            ),
            (
                "middlebox-reset",
                "the RST's TTL differs from the peer's packets, or it comes "
                "faster than the peer's round trip",
            ),
            ("accept-queue-overflow", "right after the handshake, with tcp_abort_on_overflow=1"),
            ("fin-wait-2-stall", "a late FIN or data after the peer's FIN_WAIT_2 socket expired"),
        ),
        CAPTURE,
        (
            "nstat -az TcpExtTCPAbortOnClose TcpExtTCPAbortOnData TcpOutRsts  # on the peer",
            "dmesg / application logs on the peer for restarts at that time",
        ),
    ),
    Meaning(
        "SYN answered by RST (ECONNREFUSED)",
        ("refused", "econnrefused", "errno 111", "(111:"),
        "Nobody listened on the port (or a firewall REJECTed with a reset): the connect() "
        "failed within one round trip.",
        (
            ("connection-refused", "SYN, then RST+ACK acknowledging ISN+1, no SYN-ACK"),
            (
                "port-scan",
                "one source's SYNs to 20 or more ports, mostly answered by RST or nothing: "
                "a scanner's closed ports, not a failing client",
            ),
        ),
        CAPTURE,
        ("ss -lnt 'sport = :PORT'  # on the server: is anything listening?",),
    ),
    Meaning(
        "nothing came back in time (ETIMEDOUT, i/o timeout)",
        (
            "timed out",
            "timeout",
            "etimedout",
            "errno 110",
            "(110:",
            "i/o timeout",
            "deadline exceeded",
        ),
        "Either the handshake was never answered, or data (or keep-alive probes) went "
        "unacknowledged until the kernel or the application gave up.",
        (
            ("syn-timeout", "SYNs retransmitted at 1, 3, 7 … s (or every second) with no answer"),
            (
                "syn-flood",
                "the same unanswered (or SYN-ACKed, never completed) handshakes by the "
                "hundred, from many source addresses: a SYN flood filled the listener's SYN "
                "queue and SYN cookies were off or not enough",
            ),
            (
                "accept-queue-overflow",
                "same, but the listener answers other clients meanwhile; "
                "or SYN-ACK retransmitted after the client's ACK",
            ),
            ("retransmission-timeout", "data retransmitted with doubling gaps, never acknowledged"),
            (
                "pmtu-black-hole",
                "only full-size segments vanish (small ones pass): a transfer that hangs after "
                "its first bytes, ICMP packet-too-big dropped on the path",
            ),
            ("keepalive-dead-peer", "an idle connection: keep-alive probes unanswered"),
            (
                "zero-window-stall",
                "the peer advertised window 0 (a read/write timeout in the "
                "application, not the kernel)",
            ),
        ),
        CAPTURE,
        (
            "ss -tno state syn-sent  # retries in timer:(on,…,N)",
            "nstat -az TcpExtListenOverflows TcpExtTCPTimeouts TcpExtTCPAbortOnTimeout",
            "ss -lnt  # on the server: Recv-Q >= Send-Q on a LISTEN row is a full accept queue",
        ),
    ),
    Meaning(
        "the kernel's SYN queue overflowed (SYN flood warning)",
        ("syn flooding", "sending cookies", "syncookies", "syn flood"),
        "The listener's SYN queue (half-open connections in SYN_RECV, bounded by the listen() "
        "backlog, net.core.somaxconn and net.ipv4.tcp_max_syn_backlog) was full: the kernel "
        "answered further SYNs with SYN cookies (tcp_syncookies=1) or dropped them "
        "('Dropping request'). A flood of spoofed SYNs, or a burst of real clients whose "
        "handshakes do not complete.",
        (
            (
                "syn-flood",
                "hundreds of handshakes from many sources that never complete; cookie "
                "SYN-ACKs leave out the window scale and SACK a SYN without timestamps offered",
            ),
            (
                "accept-queue-overflow",
                "few sources, handshakes that complete but wait for accept(): the accept "
                "queue, not the SYN queue, is full",
            ),
        ),
        CAPTURE,
        (
            "nstat -az TcpExtSyncookiesSent TcpExtSyncookiesRecv TcpExtSyncookiesFailed "
            "TcpExtListenDrops TcpExtTCPReqQFullDoCookies TcpExtTCPReqQFullDrop",
            "ss -tan state syn-recv | wc -l  # half-open connections now",
            "sysctl net.ipv4.tcp_syncookies net.ipv4.tcp_max_syn_backlog net.core.somaxconn "
            "net.ipv4.tcp_synack_retries",
        ),
    ),
    Meaning(
        "the local port is taken (EADDRINUSE)",
        (
            "address already in use",
            "eaddrinuse",
            "errno 98",
            "(98:",
            "bindexception",
            "address in use",
        ),
        "bind() (or listen()) found the port held by another socket on this host; no packet "
        "is sent. Three causes: (1) a restarted server whose old connections are still in "
        "TIME_WAIT on the listening port for 60 s (the server closed them first) and the new "
        "socket lacks SO_REUSEADDR, or the old one lacked it: a TIME_WAIT socket keeps the "
        "SO_REUSEADDR of the listener it came from. (2) Another process still listens, e.g. "
        "the old instance not yet stopped; two listeners on one port need SO_REUSEPORT on "
        "both. (3) The port lies inside net.ipv4.ip_local_port_range and an outgoing "
        "connect() on this host took it as its source port; SO_REUSEADDR does not help "
        "while that connection lives, nor for 60 s after it if that side closed first. "
        "Fixes: SO_REUSEADDR on every listening socket — "
        + knowledge.REUSEADDR_DEFAULTS
        + "; list service ports in net.ipv4.ip_local_reserved_ports (or move the range "
        "away from them); stop the old process or hand over with SO_REUSEPORT. Never "
        "SO_LINGER 0 to get rid of TIME_WAIT. Seen as: " + "; ".join(knowledge.ADDR_IN_USE),
        (),
        "`tcpwhy host` on that host (read-only): it flags listeners inside the ephemeral "
        "range and TIME_WAIT on listening ports; `tcpwhy lab addr-in-use-restart` and "
        "`tcpwhy lab ephemeral-overlap` replay both",
        (
            "ss -ltnp 'sport = :PORT'  # who listens on it now (process and pid)",
            "ss -tanp 'sport = :PORT'  # TIME-WAIT or an outgoing connection holding it",
            "sysctl net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports",
        ),
    ),
    Meaning(
        "no free local port (EADDRNOTAVAIL)",
        ("cannot assign requested address", "eaddrnotavail", "errno 99"),
        "Every ephemeral port to that destination is taken, usually by TIME_WAIT sockets of "
        "short connections the client closed first, or the range "
        "(net.ipv4.ip_local_port_range minus net.ipv4.ip_local_reserved_ports) is too "
        "narrow. A connect() picks its source port from that range and needs a 4-tuple "
        "not in use; the failing call sends no packet.",
        (
            (
                "time-wait-accumulation",
                "many short connections to one server port, the client closing first",
            ),
            ("time-wait-reuse", "SYNs on a 4-tuple still in TIME_WAIT"),
        ),
        CAPTURE,
        (
            "ss -s; ss -tan state time-wait | wc -l",
            "sysctl net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports "
            "net.ipv4.tcp_tw_reuse",
        ),
    ),
    Meaning(
        "no route to the host (EHOSTUNREACH)",
        ("no route to host", "ehostunreach", "errno 113", "(113:", "host is unreachable"),
        "connect() (or a read or write, after retries) got an ICMP error instead of an "
        "answer: destination unreachable (host unreachable 3/1, host or communication "
        "administratively prohibited 3/10 and 3/13, ICMPv6 address unreachable 1/3) or time "
        "exceeded, from the destination itself (its own firewall REJECTs) or from a router "
        "or firewall on the path. Linux ends a connect() at once on it, without retrying. "
        "Linux reports it too when ARP/ND for the destination or the gateway on the local "
        "link gets no answer (the host is down or the address wrong): then no SYN leaves, "
        "only ARP requests or neighbour solicitations, and the kernel's ICMP to itself shows "
        "only on a capture of `any` or `lo`. Seen as: " + "; ".join(knowledge.HOST_UNREACH),
        (
            (
                "icmp-unreachable",
                "the SYN answered by an ICMP error quoting it; its source tells who: the "
                "server's own address (its firewall) or a router's",
            ),
        ),
        "tcpdump -ni any -s 256 -w why.pcap 'tcp port PORT or icmp or icmp6 or arp'  # ICMP too",
        (
            "ip route get ADDR; ip neigh show  # the next hop, and whether ARP/ND resolved it",
            "nft list ruleset | grep -n reject; iptables -S | grep REJECT  # on the server "
            "and the routers: a reject rule",
            "the security group / network ACL of the destination (cloud)",
        ),
    ),
    Meaning(
        "the network is unreachable (ENETUNREACH)",
        ("network is unreachable", "enetunreach", "errno 101", "(101:", "network unreachable"),
        "No route to the destination's network: either this host's own routing table has "
        "none (no default route, or IPv6 tried without an IPv6 route; connect() fails "
        "without sending a packet), or a router on the path has none and answered the SYN "
        "with ICMP network unreachable (3/0, 3/6, 3/9, 3/11; ICMPv6 no route 1/0). Seen as: "
        + "; ".join(knowledge.NET_UNREACH),
        (
            (
                "icmp-unreachable",
                "the SYN answered by a router's network unreachable (its source is the router)",
            ),
        ),
        "tcpdump -ni any -s 256 -w why.pcap 'tcp port PORT or icmp or icmp6'  # no SYN at all: "
        "a local routing problem",
        (
            "ip route get ADDR; ip -6 route  # on the client: a route to it at all?",
            "traceroute -T -p PORT ADDR  # which router answers 'network unreachable'",
        ),
    ),
    Meaning(
        "TLS stream ended without close_notify (unexpected EOF)",
        (
            "unexpected eof",
            "eof occurred in violation of protocol",
            "sleoferror",
            "close_notify",
            "ragged eof",
        ),
        "The peer's FIN arrived with no TLS close_notify alert before it: TCP ended, but TLS "
        "cannot say whether the data was complete. Strict TLS stacks (OpenSSL 3, and Python, "
        "curl, nginx built on it) report it as an error.",
        (
            (
                "tls-truncation",
                "the closer's last record before its FIN is data, not a short alert record; "
                "warning when the FIN follows that data at once (a cut message looks the same), "
                "info on an idle close",
            ),
            (
                "stale-keepalive-reuse",
                "the server did send close_notify and FIN long before: the client reused the "
                "pooled connection and read the EOF then",
            ),
        ),
        CAPTURE,
        ("the closer's TLS shutdown: SSL_shutdown / unwrap() / tls.Conn.Close() before close()",),
    ),
    Meaning(
        "TLS handshake refused by a fatal alert",
        (
            "alert unknown ca",
            "unknown certificate authority",
            "certificate verify failed",
            "alert handshake failure",
            "handshake_failure",
            "alert protocol version",
            "unsupported protocol",
            "bad certificate",
            "certificate_unknown",
            "received fatal alert",
            "pkix path building failed",
            "self-signed certificate",
            "self_signed_cert",
        ),
        "One side of the TLS handshake refused it and said why with a fatal alert: it does "
        "not trust the certificate (unknown_ca, bad_certificate, certificate_expired), or the "
        "two sides share no protocol version or cipher (protocol_version, handshake_failure). "
        "The side that sends the alert logs the reason; the other logs the alert's name.",
        (
            (
                "tls-fatal-alert",
                "in TLS 1.2 the alert's level and description are in clear right after the "
                "ClientHello or the server's flight; in TLS 1.3 a client's refusal is a short "
                "encrypted record and FIN where its Finished should be (likely)",
            ),
        ),
        CAPTURE,
        (
            "openssl s_client -connect HOST:PORT -servername NAME -showcerts  # chain, version",
            "tcpwhy packets why.pcap -Y 'tls.alert_message or tls.handshake.type == 1'",
        ),
    ),
    Meaning(
        "file descriptors or pool slots exhausted",
        (
            "too many open files",
            "emfile",
            "timeout waiting for connection from pool",
            "pool exhausted",
            "connection pool",
        ),
        "Sockets are not closed: the peer closed them, the kernel acknowledged, the "
        "application never called close().",
        (("close-wait-leak", "peer's FIN acknowledged, no FIN from this side for a long time"),),
        CAPTURE,
        ("ss -tanp state close-wait  # count growing for one process", "ls /proc/PID/fd | wc -l"),
    ),
)


FIXES: dict[str, tuple[knowledge.Fix, ...]] = {
    "write into a connection the peer had closed (EPIPE)": (
        *knowledge.CLIENT_IDLE,
        *knowledge.RETRY,
    ),
    "end-of-file on a reused connection before any response": (
        *knowledge.CLIENT_IDLE,
        *knowledge.RETRY,
        *knowledge.SERVER_IDLE,
    ),
    "the local port is taken (EADDRINUSE)": knowledge.REUSEADDR,
    "no free local port (EADDRNOTAVAIL)": (
        knowledge.Fix("any", None, None, "reuse connections (keep-alive pools) instead of "
                      "opening one per request"),
        knowledge.sysctl("net.ipv4.tcp_tw_reuse", "1", "on client hosts (needs TCP timestamps)"),
        knowledge.sysctl("net.ipv4.ip_local_port_range", None, "a wider range"),
    ),
}  # fmt: skip
"""The per-stack fixes `--format json` gives with a meaning (the same objects as `analyze`'s
`fixes_by_stack`), where the meaning alone says what to change."""


def _kernel_reasons(h: Meaning) -> list[dict[str, str]]:
    from tcpwhy.diagnose.kernel_trace import kernel_reasons

    return kernel_reasons([k for k, _ in h.kinds])


def explain(message: str) -> list[Meaning]:
    m = message.lower()
    hits = [x for x in MEANINGS if any(k in m for k in x.keywords)]
    # the bare word "timeout" also appears in pool messages: prefer the more specific match
    if len(hits) > 1 and any(x.name.startswith("file descriptors") for x in hits):
        hits = [x for x in hits if x.name.startswith("file descriptors")]
    return hits


def to_json(message: str, hits: list[Meaning]) -> str:
    from tcpwhy.schemas import SCHEMA_VERSION

    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "message": message,
            "meanings": [
                {
                    **{k: v for k, v in asdict(h).items() if k not in ("keywords", "kinds")},
                    "kinds": [{"kind": k, "tell": t} for k, t in h.kinds],
                    "kernel_reasons": _kernel_reasons(h),
                    "fixes": [f.to_json() for f in FIXES.get(h.name, ())],
                }
                for h in hits
            ],
        },
        indent=2,
        ensure_ascii=False,
    )


def write_text(message: str, hits: list[Meaning], file: IO[str]) -> None:
    from tcpwhy.diagnose.http import printable

    out = [f'tcpwhy explain "{printable(message, 200)}"', ""]
    if not hits:
        out.append(
            "No known connection failure produces this message. Try the errno name "
            "(ECONNRESET, EPIPE, ETIMEDOUT …) or a shorter part of it."
        )
    for h in hits:
        out.append(f"== {h.name}")
        out.append(textwrap.fill(h.wire, 88))
        out.append("")
        if h.kinds:
            out.append("Patterns that produce it, and how to tell them apart in a capture:")
            for kind, tell in h.kinds:
                out.append(
                    textwrap.fill(
                        f"{kind}: {tell}", 88, initial_indent="  - ", subsequent_indent="    "
                    )
                )
            out.append("")
            if _kernel_reasons(h):
                out.append(
                    "The kernel's reasons behind it (`sudo tcpwhy host trace`, as measured):"
                )
                for r in _kernel_reasons(h):
                    what = f"{r['event']} {r['reason']}".strip()
                    out.append(f"  - {what} ← {r['kind']}: {r['who']}")
                out.append("")
            out.append("What to capture (then run `tcpwhy analyze why.pcap`):")
            out.append("  " + h.capture)
        else:
            out.append("No capture shows it (the failing call sends no packet); instead:")
            out.append(textwrap.fill(h.capture, 88, initial_indent="  ", subsequent_indent="  "))
        out.append("What to look at on the hosts:")
        out.extend(f"  {x}" for x in h.host)
        out.append("")
    file.write("\n".join(out).rstrip() + "\n")
