"""Kernel SNMP/netstat counters that record connection lifecycles, each with its meaning.

Names follow `nstat`: the table prefix joined to the field (TcpExtListenOverflows,
TcpRetransSegs, Ip6InReceives). The TCP MIBs (Tcp, TcpExt) are per network
namespace and count IPv4 and IPv6 together; /proc/net/snmp6 adds the IPv6 IP
and ICMP tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FILES = ("netstat", "snmp", "snmp6")

# Not counters: constants or instantaneous values, so a delta means nothing.
GAUGES = {"TcpCurrEstab"}
CONSTANTS = {
    "TcpRtoAlgorithm",
    "TcpRtoMin",
    "TcpRtoMax",
    "TcpMaxConn",
    "IpForwarding",
    "IpDefaultTTL",
}


@dataclass(frozen=True)
class CounterInfo:
    name: str
    group: str
    meaning: str  # what moved, and where in the kernel
    check: str = ""  # what to look at next


def _c(name: str, group: str, meaning: str, check: str = "") -> CounterInfo:
    return CounterInfo(name, group, meaning, check)


CATALOG: tuple[CounterInfo, ...] = (
    # accept queue / SYN queue
    _c("TcpExtListenOverflows", "listen",
       "SYN or handshake-completing ACK dropped: a listener's accept queue was full (tcp_conn_request / tcp_check_req)",
       "`tcpwhy host listen` shows which queue is full: the process accepts too slowly or its backlog = min(listen() backlog, somaxconn) is too small"),
    _c("TcpExtListenDrops", "listen",
       "every drop at a listening socket: accept-queue overflows plus SYN-queue drops, no memory, no route (tcp_listendrop)",
       "if it moves more than ListenOverflows, look at TCPReqQFullDrop and memory pressure"),
    _c("TcpExtTCPReqQFullDrop", "listen",
       "SYN dropped: SYN queue (tcp_max_syn_backlog) full and syncookies off",
       "enable net.ipv4.tcp_syncookies or raise tcp_max_syn_backlog; count SYN_RECV with `tcpwhy host states`"),
    _c("TcpExtTCPReqQFullDoCookies", "listen",
       "SYN queue full: answered with a syncookie instead of a queue entry",
       "a SYN burst or flood; SYN_RECV per port in `tcpwhy host states --by port`"),
    _c("TcpExtSyncookiesSent", "listen",
       "syncookies sent (SYN queue overflowed, or tcp_syncookies=2)",
       "SYN flood, or a backlog too small for the connection burst"),
    _c("TcpExtSyncookiesRecv", "listen", "valid syncookie ACKs received: connections completed without a SYN-queue entry"),
    _c("TcpExtSyncookiesFailed", "listen",
       "ACKs that looked like syncookie answers but did not validate", "stale or spoofed ACKs reaching a listener"),
    _c("TcpExtTCPDeferAcceptDrop", "listen",
       "handshake dropped: no data arrived within TCP_DEFER_ACCEPT", "clients that connect and stay silent"),
    _c("TcpExtEmbryonicRsts", "listen", "RSTs received for SYN_RECV request sockets", "clients giving up during the handshake"),
    # opens and failures
    _c("TcpActiveOpens", "opens", "connect() attempts started (CLOSED → SYN_SENT)"),
    _c("TcpPassiveOpens", "opens", "connections created by listeners (LISTEN → SYN_RECV)"),
    _c("TcpAttemptFails", "opens",
       "connection attempts failed: SYN_SENT/SYN_RECV → CLOSED (RST, refused, timeout) or SYN_RECV → LISTEN",
       "'connection refused' or handshake timeouts; TCPSynRetrans tells timeouts from refusals"),
    _c("TcpCurrEstab", "opens", "connections now in ESTABLISHED or CLOSE_WAIT (a gauge, not a counter)"),
    # resets and aborts
    _c("TcpEstabResets", "resets",
       "connections in ESTABLISHED or CLOSE_WAIT ended by a RST, sent or received",
       "if OutRsts stays flat, the peer or a middlebox sent the resets"),
    _c("TcpOutRsts", "resets",
       "segments sent with RST (aborts, and closed ports answering a SYN)",
       "the TCPAbortOn* counters say why we reset"),
    _c("TcpExtTCPAbortOnData", "resets",
       "RST sent: data arrived after the application closed its socket (or close() with SO_LINGER 0)",
       "the peer still sends to a socket we closed: early close or framing mismatch in the protocol"),
    _c("TcpExtTCPAbortOnClose", "resets",
       "RST sent: the application called close() with unread data in its receive queue",
       "the app closes before reading the whole request/response; the peer sees 'connection reset by peer'"),
    _c("TcpExtTCPAbortOnMemory", "resets",
       "orphaned socket killed: too many orphans (tcp_max_orphans) or TCP memory (tcp_mem) exhausted",
       "`tcpwhy host sysctl` (tcp_max_orphans) and the FIN_WAIT/LAST_ACK orphan count"),
    _c("TcpExtTCPAbortOnTimeout", "resets",
       "connection killed: retransmission, SYN or keepalive retries ran out (tcp_write_timeout / keepalive timer)",
       "dead peer or a path that black-holes packets; tcp_retries2, tcp_syn_retries and keepalive settings set how long it took"),
    _c("TcpExtTCPAbortOnLinger", "resets",
       "FIN_WAIT_2 orphan reset instead of waiting (TCP_LINGER2 set negative)", "an application setting TCP_LINGER2"),
    _c("TcpExtTCPAbortFailed", "resets", "a RST was due but could not be sent (no memory)"),
    _c("TcpExtTCPChallengeACK", "resets",
       "challenge ACKs sent (RFC 5961): a RST or SYN with an in-window but not exact sequence number",
       "resets that do not land: a middlebox or a peer with a stale sequence"),
    _c("TcpExtTCPSYNChallenge", "resets", "SYN received on an established connection, answered with a challenge ACK",
       "a client reusing a 4-tuple the server still holds (NAT, port reuse)"),
    # retransmissions
    _c("TcpRetransSegs", "retrans", "segments retransmitted, all causes",
       "above ~1% of TcpOutSegs means loss or a stalled peer"),
    _c("TcpExtTCPTimeouts", "retrans", "retransmission timer (RTO) fired: data went unacknowledged for a full RTO",
       "loss or a peer that stopped answering; fast retransmits do not count here"),
    _c("TcpExtTCPSynRetrans", "retrans", "SYN or SYN-ACK retransmitted: handshake packets lost or unanswered",
       "an overflowing listener on the server (its ListenOverflows), a firewall dropping SYNs, or a dead address"),
    _c("TcpExtTCPLossProbes", "retrans", "tail loss probes sent (early retransmit of the last segment)"),
    _c("TcpExtTCPSpuriousRTOs", "retrans", "RTOs later found unnecessary (the ACK was just late)", "delay spikes rather than loss"),
    # TIME_WAIT
    _c("TcpExtTW", "timewait", "connections that entered TIME_WAIT or an orphaned FIN_WAIT_2 (counted when the timer is set)",
       "its rate is the close rate of the side that closes first"),
    _c("TcpExtTWRecycled", "timewait", "TIME_WAIT 4-tuple taken over by a new connect() (tcp_tw_reuse)"),
    _c("TcpExtTWKilled", "timewait", "TIME_WAIT/FIN_WAIT_2 timers set to 4 s or less (a very short tcp_fin_timeout)"),
    _c("TcpExtTCPTimeWaitOverflow", "timewait",
       "no TIME_WAIT socket created: tcp_max_tw_buckets reached, the connection vanished without TIME_WAIT protection",
       "raise tcp_max_tw_buckets or reuse connections (keep-alive pools)"),
    _c("TcpExtPAWSActive", "timewait", "SYN-ACK rejected by PAWS during connect() (its timestamp went backwards)",
       "several hosts behind one NAT address"),
    _c("TcpExtPAWSEstab", "timewait", "segment dropped on an established connection: timestamp older than the last one (PAWS)",
       "NAT or a load balancer mixing flows"),
    _c("TcpExtPAWSTimewait", "timewait", "segment to a TIME_WAIT socket dropped by PAWS"),
    _c("TcpExtTSEcrRejected", "timewait", "segment dropped: its echoed timestamp was invalid"),
    # windows, buffers, keepalive
    _c("TcpExtTCPBacklogDrop", "buffers",
       "segment dropped: the application held the socket and its backlog exceeded the receive buffer",
       "an app holding the socket lock for long (large sends) or a small SO_RCVBUF"),
    _c("TcpExtTCPRcvQDrop", "buffers", "segment dropped: receive queue full and no memory to grow it"),
    _c("TcpExtTCPZeroWindowDrop", "buffers", "segment dropped: our receive window is zero because the application is not reading"),
    _c("TcpExtTCPToZeroWindowAdv", "buffers", "we advertised a zero window: our application stopped reading",
       "Recv-Q of ESTABLISHED sockets in `tcpwhy host states`"),
    _c("TcpExtTCPWantZeroWindowAdv", "buffers", "we wanted to advertise a zero window (receive buffer nearly full)"),
    _c("TcpExtTCPFromZeroWindowAdv", "buffers", "we reopened a zero window: our application read again"),
    _c("TcpExtTCPWinProbe", "buffers", "zero-window probes sent: the peer's window is zero, its application is not reading",
       "Send-Q of ESTABLISHED sockets: which peer stopped reading"),
    _c("TcpExtTCPMemoryPressures", "buffers", "TCP entered memory pressure (tcp_mem)", "socket buffer totals in /proc/net/sockstat"),
    _c("TcpExtPruneCalled", "buffers", "receive queue pruned for lack of buffer space"),
    _c("TcpExtTCPKeepAlive", "keepalive", "keepalive probes sent",
       "unanswered probes end in TCPAbortOnTimeout after tcp_keepalive_probes"),
    # errors and ICMP
    _c("TcpInErrs", "errors", "segments received with errors (bad checksum, bad header)"),
    _c("TcpInCsumErrors", "errors", "segments received with a bad checksum"),
    _c("IcmpInDestUnreachs", "errors", "ICMP destination-unreachable received (IPv4): connect() fails with EHOSTUNREACH/ENETUNREACH"),
    _c("Icmp6InDestUnreachs", "errors", "ICMPv6 destination-unreachable received: connect() fails with EHOSTUNREACH/ENETUNREACH"),
)  # fmt: skip

BY_NAME: dict[str, CounterInfo] = {c.name: c for c in CATALOG}
GROUP_TITLES = {
    "listen": "accept and SYN queues",
    "opens": "connection opens",
    "resets": "resets and aborts",
    "retrans": "retransmissions and timeouts",
    "timewait": "TIME_WAIT and PAWS",
    "buffers": "windows and buffers",
    "keepalive": "keepalive",
    "errors": "errors and ICMP",
}


ALERTS: dict[str, str] = {
    # handshakes dropped at a listener: clients see timeouts or resets now
    "TcpExtListenOverflows": "error",
    "TcpExtListenDrops": "error",
    "TcpExtTCPReqQFullDrop": "error",
    # connections killed or data dropped by the kernel itself
    "TcpExtTCPAbortOnMemory": "warning",
    "TcpExtTCPAbortOnTimeout": "warning",
    "TcpExtTCPAbortFailed": "warning",
    "TcpExtTCPTimeWaitOverflow": "warning",
    "TcpExtTCPBacklogDrop": "warning",
    "TcpExtTCPRcvQDrop": "warning",
    "TcpExtTCPZeroWindowDrop": "warning",
    "TcpExtTCPMemoryPressures": "warning",
    "TcpInCsumErrors": "warning",
    # failures that are part of normal life in small numbers
    "TcpAttemptFails": "info",
    "TcpEstabResets": "info",
    "TcpExtTCPAbortOnData": "info",
    "TcpExtTCPAbortOnClose": "info",
    "TcpExtTCPSynRetrans": "info",
    "TcpExtTCPTimeouts": "info",
    "TcpExtSyncookiesSent": "info",
    "TcpExtTCPReqQFullDoCookies": "info",
    "TcpExtTCPDeferAcceptDrop": "info",
    "TcpExtEmbryonicRsts": "info",
    "TcpInErrs": "info",
    "TcpExtPruneCalled": "info",
}
"""The level of an alert when a counter moves between two samples of `host counters
--interval` (totals since boot are history, never an alert); counters not listed never alert."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def parse_netstat(text: str) -> dict[str, int]:
    """Parse /proc/net/netstat or /proc/net/snmp: pairs of `Prefix: names` / `Prefix: values` lines."""
    out: dict[str, int] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        hp, _, hnames = head.partition(":")
        vp, _, values = vals.partition(":")
        if hp != vp:
            raise ValueError(f"unpaired lines {hp!r} / {vp!r}")
        for name, value in zip(hnames.split(), values.split(), strict=False):
            out[hp + name] = _int(value)
    return out


def parse_snmp6(text: str) -> dict[str, int]:
    """Parse /proc/net/snmp6: one `Name value` pair per line, names already prefixed."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = _int(parts[1])
    return out


def read_texts(root: Path = Path("/proc/net")) -> dict[str, str]:
    """Raw files, read by the caller's namespace (picklable, for run_in_netns)."""
    out: dict[str, str] = {}
    for name in FILES:
        try:
            out[name] = (root / name).read_text()
        except OSError:
            out[name] = ""  # snmp6 is absent when IPv6 is disabled
    return out


def parse_all(texts: dict[str, str]) -> dict[str, int]:
    values: dict[str, int] = {}
    values.update(parse_netstat(texts.get("netstat", "")))
    values.update(parse_netstat(texts.get("snmp", "")))
    values.update(parse_snmp6(texts.get("snmp6", "")))
    return values


def deltas(prev: dict[str, int], cur: dict[str, int]) -> dict[str, int]:
    """Counters that moved between two readings (gauges and constants excluded)."""
    out: dict[str, int] = {}
    for name, value in cur.items():
        if name in GAUGES or name in CONSTANTS:
            continue
        d = value - prev.get(name, 0)
        if d < 0:  # wrapped, or a counter reset: treat the new value as the movement
            d = value
        if d:
            out[name] = d
    return out


def explain(name: str) -> str:
    info = BY_NAME.get(name)
    if info is None:
        return ""
    return f"{info.meaning}; check: {info.check}" if info.check else info.meaning
