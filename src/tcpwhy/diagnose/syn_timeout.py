"""syn-timeout: SYNs never answered, neither SYN-ACK nor RST, with the retry ladder seen."""

from __future__ import annotations

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import fmt_s
from tcpwhy.diagnose.handshake import ladder, ladder_text, syn_rows, unanswered_syn_streams
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule

ORDER = 110

KIND = "syn-timeout"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c in diag.conns(unanswered_syn_streams(diag)):
        syns = syn_rows(c)
        if not syns:
            continue
        waited = (diag.cap.end_ns - c.ts[syns[0]]) / 1e9
        if len(syns) < 2 and waited < 3.0:
            continue  # one SYN at the very end of the capture: too early to tell
        off = ladder(c, syns)
        rows = [
            (i, "SYN" if k == 0 else f"SYN retransmitted (+{off[k]:g} s)")
            for k, i in enumerate(syns)
        ]
        hits.add(c.server, c, rows, {"ladder_s": off, "waited_s": waited})
        diag.claim(c.sid, Claim.SYN)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    server, ex, c, n = g.key, g.ex, g.c, g.n
    off = ex.facts["ladder_s"]
    summary = (
        f"{plural(n, 'connection attempt')} to {server} never answered "
        f"({plural(len(off), 'SYN')} on the first, no SYN-ACK, no RST)"
    )
    explanation = (
        f"On stream {c.no} the client {c.client} sent a SYN to {server}"
        f"{' and retried' if len(off) > 1 else ''}: {ladder_text(off)}. Nothing came back "
        "— no SYN-ACK, no RST, no ICMP error in the capture — so the packets were dropped "
        "on the way, or the answer was lost on the way back. The client's socket stays in SYN_SENT until its retries run out "
        "(Linux default tcp_syn_retries=6: about 127–130 s), then connect() fails with "
        "ETIMEDOUT, unless the application's own connect timeout fires first. "
        f"The capture followed this attempt for {fmt_s(ex.facts['waited_s'])}."
    )
    causes = [
        "A firewall, security group or network ACL that DROPs the port (instead of rejecting it).",
        "The host is down or the address is wrong (no route, blackhole), or the return "
        "path is broken (asymmetric routing, NAT).",
        "The server's accept queue is full (Linux drops SYNs silently then) — see "
        "accept-queue-overflow if other clients were admitted meanwhile.",
        "conntrack table full on a middlebox or host ('nf_conntrack: table full, dropping "
        "packet' in dmesg).",
    ]
    fixes = [
        "Find where the SYN dies: capture on the server too (`tcpdump -ni any 'tcp port "
        f"{server.rsplit(':', 1)[1]} and tcp[tcpflags] & tcp-syn != 0'`); check firewall "
        "DROP counters and `nstat -az TcpExtListenOverflows` on the server.",
        knowledge.advice(
            "Give clients a connect timeout far below 127 s (Go net.Dialer{Timeout}, Java "
            "setConnectTimeout, Python requests timeout=(connect, read), Node socket.setTimeout) "
            "and retry another address; net.ipv4.tcp_syn_retries lowers the kernel's own limit.",
            knowledge.Fix("go", "net.Dialer.Timeout", None, "Go net.Dialer{Timeout}"),
            knowledge.Fix("java", "setConnectTimeout", None, "Java setConnectTimeout"),
            knowledge.Fix(
                "python-requests", "timeout", None, "Python requests timeout=(connect, read)"
            ),
            knowledge.Fix("node", "socket.setTimeout", None, "Node socket.setTimeout"),
            knowledge.sysctl(
                "net.ipv4.tcp_syn_retries", None, "lowers the kernel's own limit (127 s by default)"
            ),
        ),
        knowledge.advice(
            "If conntrack is full: raise net.netfilter.nf_conntrack_max or stop tracking this traffic.",
            knowledge.sysctl(
                "net.netfilter.nf_conntrack_max",
                None,
                "raise it if conntrack is full, or stop tracking this traffic",
            ),
        ),
    ]
    facts = {"server": server, "retry_ladder_s": off}
    errors = knowledge.TIMEOUT
    return Story(Severity.ERROR, summary, explanation, causes, fixes, errors, facts)
