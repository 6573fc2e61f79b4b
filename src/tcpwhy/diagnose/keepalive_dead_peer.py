"""keepalive-dead-peer: TCP keep-alive probes that nobody answers, then the connection dies."""

from __future__ import annotations

import itertools
import statistics

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.probes import candidate_streams, probes
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule

ORDER = 170

KIND = "keepalive-dead-peer"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c in diag.conns(candidate_streams(diag)):
        for x in (0, 1):
            ka = [p.i for p in probes(c, x) if not p.zero_window]
            if len(ka) < 2:
                continue
            if c.next_from(1 - x, ka[0]) is not None:
                continue  # answered: the peer is alive (or reset: half-open)
            prev = ka[0] - 1 if ka[0] > 0 else None
            rows = []
            if prev is not None:
                rows.append((prev, "last packet before the connection went idle"))
            rows += [(i, f"keep-alive probe {k + 1}, unanswered") for k, i in enumerate(ka)]
            rst = c.next_rst(x, ka[-1])
            if rst is not None:
                rows.append(
                    (rst, f"{WHO[x]} gives up: RST into the void, the socket errors with ETIMEDOUT")
                )
            facts = {
                "prober": WHO[x],
                "idle_s": c.dt(prev, ka[0]) if prev is not None else None,
                "interval_s": statistics.median(c.dt(a, b) for a, b in itertools.pairwise(ka)),
                "probes": len(ka),
                "gave_up": rst is not None,
            }
            hits.add(c.server, c, rows, facts)
            diag.claim(c.sid)
            diag.claim(c.sid, Claim.RETRANS)
            break
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    server, c, n, f = g.key, g.c, g.n, g.facts
    summary = f"{plural(n, 'idle connection')} to {server}: keep-alive probes unanswered" + (
        ", the prober gave up (ETIMEDOUT)" if f["gave_up"] else ""
    )
    explanation = (
        f"On {c.label()} the {f['prober']} had TCP keep-alive "
        f"enabled. After {fmt_s(f['idle_s'] or 0)} of silence (TCP_KEEPIDLE) its kernel sent "
        f"a probe — an empty segment one byte behind its next sequence number, which any "
        f"live peer must acknowledge — and repeated it every {fmt_s(f['interval_s'])} "
        f"(TCP_KEEPINTVL): {plural(f['probes'], 'probe')}, none answered. "
        + (
            "After the last one (TCP_KEEPCNT) it declared the peer dead, sent a RST and the "
            "application's blocked read failed with ETIMEDOUT ('Connection timed out'). "
            if f["gave_up"]
            else "The capture ends before the prober gives up. "
        )
        + "The peer host vanished, or a middlebox on the path dropped the connection's state "
        "and now discards its packets. Without keep-alive this connection would have hung "
        "forever."
    )
    causes = [
        "The peer host crashed, was powered off or lost its network (failover, VM killed).",
        "A NAT, firewall or load balancer dropped its idle-connection state (idle timeouts: "
        "AWS NLB 350 s, Azure LB 4 min, many firewalls 1 h) and silently drops the packets.",
    ]
    fixes = [
        knowledge.advice(
            "Keep keep-alive (or application pings) with an idle time below the smallest "
            "middlebox idle timeout on the path: SO_KEEPALIVE + TCP_KEEPIDLE / TCP_KEEPINTVL / "
            "TCP_KEEPCNT per socket (Go net.Dialer{KeepAlive}, Java ExtendedSocketOptions."
            "TCP_KEEPIDLE, Node socket.setKeepAlive(true, ms)), or host-wide "
            "net.ipv4.tcp_keepalive_time / _intvl / _probes (defaults 7200 s, 75 s, 9).",
            knowledge.Fix(
                "any",
                "TCP_KEEPIDLE",
                None,
                "SO_KEEPALIVE + TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT per socket, idle time below the smallest middlebox idle timeout on the path",
            ),
            knowledge.Fix("go", "net.Dialer.KeepAlive", None, "Go net.Dialer{KeepAlive}"),
            knowledge.Fix(
                "java",
                "ExtendedSocketOptions.TCP_KEEPIDLE",
                None,
                "Java ExtendedSocketOptions.TCP_KEEPIDLE",
            ),
            knowledge.Fix(
                "node", "socket.setKeepAlive", None, "Node socket.setKeepAlive(true, ms)"
            ),
            knowledge.sysctl(
                "net.ipv4.tcp_keepalive_time",
                None,
                "host-wide, with _intvl and _probes (defaults 7200 s, 75 s, 9)",
            ),
        ),
        knowledge.advice(
            "Bound requests with data in flight with TCP_USER_TIMEOUT, and let the pool "
            "reconnect on ETIMEDOUT.",
            knowledge.Fix(
                "linux",
                "TCP_USER_TIMEOUT",
                None,
                "bound requests with data in flight; let the pool reconnect on ETIMEDOUT",
            ),
        ),
    ]
    facts = {"server": server, **f}
    errors = knowledge.TIMEOUT
    sev = Severity.ERROR if f["gave_up"] else Severity.WARNING
    return Story(sev, summary, explanation, causes, fixes, errors, facts)
