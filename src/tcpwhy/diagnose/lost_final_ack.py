"""lost-final-ack: a FIN retransmitted from LAST_ACK because the last ACK was lost."""

from __future__ import annotations

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.resets import too_fast
from tcpwhy.tcp.state import State

ORDER = 160

KIND = "lost-final-ack"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    hits = Hits()
    for x in (0, 1):
        for c in cap.conns_where(cap.n_fin[:, x] > 1):
            fins = c.fin_rows(x)
            first = fins[0]
            re = next(
                (
                    i
                    for i in fins[1:]
                    if c.seq[i] == c.seq[first] and c.state_after(x, i - 1) is State.LAST_ACK
                ),
                None,
            )
            if re is None:
                continue
            peer = 1 - x
            lost = c.fin_acked_by(peer, first, stop=re)
            answer = c.next_from(peer, re + 1)
            # by ACK numbers (capture order may differ from sending order): a FIN that does
            # not acknowledge the peer's was sent before x saw it, from FIN_WAIT_1, and the
            # wait for its ACK was in CLOSING
            pf = c.first_fin(peer)
            crossed = pf is not None and not c.acks(first, c.fin_end(pf))
            rows = [
                (
                    first,
                    f"{WHO[x]} closes (FIN) before it saw the {WHO[peer]}'s: the FINs crossed"
                    if crossed
                    else f"{WHO[x]} closes (FIN) from LAST_ACK",
                )
            ]
            if lost is not None:
                rows.append(
                    (lost, f"{WHO[peer]} ACKs it — this ACK is lost after the capture point")
                )
            rows.append((re, f"{WHO[x]} retransmits the FIN after {fmt_s(c.dt(first, re))} (RTO)"))
            reset = answer is not None and c.is_rst(answer)
            if reset and answer is not None and too_fast(c, answer):
                # too quick to be the peer's kernel: the RST is middlebox-reset's, the
                # retransmitted FIN stays this rule's
                answer, reset = None, False
            if answer is not None:
                again = "re-ACKs it from TIME_WAIT"
                if reset:
                    again = "answers with RST: its TIME_WAIT state was gone"
                rows.append((answer, f"{WHO[peer]} {again}"))
            hits.add(
                c.server,
                c,
                rows,
                {
                    "reset": reset,
                    "x": x,
                    "crossed": crossed,
                    "ack_seen": lost is not None,
                    "one_host": c.on_one_host,
                },
            )
            if reset:
                diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    server, ex, c, n = g.key, g.ex, g.c, g.n
    x = ex.facts["x"]
    one_host = ex.facts["one_host"]
    resets = g.count("reset")
    summary = f"{plural(n, 'connection')} to {server}: the last ACK of the close was lost and the FIN retransmitted"
    closing = (
        f"On stream {c.no} the {WHO[1 - x]} and the {WHO[x]} closed at the same time (their "
        f"FINs crossed, neither acknowledges the other), so the {WHO[x]} waited in CLOSING "
        "for the acknowledgment of its FIN. That ACK "
        if ex.facts["crossed"]
        else f"On stream {c.no} the {WHO[1 - x]} closed first; the {WHO[x]} then closed too "
        "and waited in LAST_ACK for the acknowledgment of its FIN. That ACK "
    )
    explanation = (
        closing
        + ("appears in the capture but " if ex.facts["ack_seen"] else "")
        + f"never reached the {WHO[x]}, whose retransmission timer (at least 200 ms) fired and "
        "sent the FIN again. "
        + (
            f"The {WHO[1 - x]} was still in TIME_WAIT and acknowledged it again — exactly what "
            "TIME_WAIT is for — so the close completed. Harmless once; "
            + (
                "both ends are on one host, with no path between them: the host itself "
                + (
                    "dropped the ACK after the capture saw it."
                    if ex.facts["ack_seen"]
                    else "dropped the ACK, or the capture missed it."
                )
                if one_host
                else "often it means loss on the path."
            )
            if not ex.facts["reset"]
            else f"The {WHO[1 - x]} no longer had a TIME_WAIT socket for the connection and "
            "answered with RST (TIME_WAIT bucket overflow, SO_LINGER 0"
            + ("" if one_host else ", or an expired NAT mapping")
            + ")."
        )
    )
    if one_host:
        # no path, no middlebox: what drops a packet between two sockets of one host
        causes = [
            "Dropped inside the host: a full receive backlog (the second column of "
            "/proc/net/softnet_stat, `nstat -az TcpExtTCPBacklogDrop`) or a local firewall "
            "rule (an INPUT or OUTPUT drop, conntrack's INVALID state).",
        ]
        if not ex.facts["ack_seen"]:
            causes.append(
                "Missed by the capture (tcpdump's 'packets dropped by kernel' at its end)."
            )
        look = (
            "point at drops inside the host; compare softnet_stat's drops and the firewall's "
            "counters before and after."
        )
    else:
        causes = [
            "Packet loss on the path (the final ACK dropped).",
            "A firewall or NAT that dropped its state after the first FIN and discards the ACK.",
        ]
        look = "point at loss or a stateful middlebox; check its timeouts for closing connections."
    fixes = [
        "Usually none for a single occurrence. Many LAST_ACK sockets (`ss -tano state "
        f"last-ack`) {look}",
        knowledge.advice(
            "net.ipv4.tcp_max_tw_buckets too low makes the peer drop TIME_WAIT sockets "
            "(TcpExtTCPTimeWaitOverflow): raise it.",
            knowledge.sysctl(
                "net.ipv4.tcp_max_tw_buckets",
                None,
                "too low makes the peer drop TIME_WAIT sockets (TcpExtTCPTimeWaitOverflow): raise it",
            ),
        ),
    ]
    facts = {"server": server, "reset": resets}
    errors = knowledge.RESET if resets else knowledge.NONE_VISIBLE
    sev = Severity.WARNING if resets else Severity.INFO
    return Story(sev, summary, explanation, causes, fixes, errors, facts)
