"""lost-final-ack: a FIN retransmitted from LAST_ACK because the last ACK was lost (P12)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.context import WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.tcp.state import State

KIND = "lost-final-ack"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    groups: dict[str, list[Instance]] = defaultdict(list)
    for x in (0, 1):
        for sid in np.flatnonzero(cap.n_fin[:, x] > 1):
            c = cap.conn(int(sid))
            fins = [i for i in range(c.n) if c.side[i] == x and c.is_fin(i)]
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
            lost = next(
                (
                    j
                    for j in range(first + 1, re)
                    if c.side[j] == peer and c.acks(j, c.fin_end(first))
                ),
                None,
            )
            answer = next((j for j in range(re + 1, c.n) if c.side[j] == peer), None)
            rows = [(first, f"{WHO[x]} closes (FIN) from LAST_ACK")]
            if lost is not None:
                rows.append(
                    (lost, f"{WHO[peer]} ACKs it — this ACK is lost after the capture point")
                )
            rows.append((re, f"{WHO[x]} retransmits the FIN after {fmt_s(c.dt(first, re))} (RTO)"))
            reset = False
            if answer is not None:
                reset = c.is_rst(answer)
                rows.append(
                    (
                        answer,
                        f"{WHO[peer]} "
                        + (
                            "answers with RST: its TIME_WAIT state was gone"
                            if reset
                            else "re-ACKs it from TIME_WAIT"
                        ),
                    )
                )
            groups[c.server].append(Instance(c, rows, {"reset": reset, "x": x}))
            if reset:
                diag.claim(c.sid)
    out = []
    for server, inst in groups.items():
        ex = min(inst, key=lambda i: i.first_ns)
        c = ex.conn
        x = ex.facts["x"]
        n = len(inst)
        resets = sum(1 for i in inst if i.facts["reset"])
        summary = f"{plural(n, 'connection')} to {server}: the last ACK of the close was lost and the FIN retransmitted"
        explanation = (
            f"On stream {c.sid} the {WHO[1 - x]} closed first; the {WHO[x]} then closed too and "
            f"waited in LAST_ACK for the acknowledgment of its FIN. That ACK "
            + ("appears in the capture but " if len(ex.rows) > 2 else "")
            + f"never reached the {WHO[x]}, whose retransmission timer (at least 200 ms) fired and "
            "sent the FIN again. "
            + (
                f"The {WHO[1 - x]} was still in TIME_WAIT and acknowledged it again — exactly what "
                "TIME_WAIT is for — so the close completed. Harmless once; often it means loss "
                "on the path."
                if not ex.facts["reset"]
                else f"The {WHO[1 - x]} no longer had a TIME_WAIT socket for the connection and "
                "answered with RST (TIME_WAIT bucket overflow, SO_LINGER 0, or an expired NAT "
                "mapping)."
            )
        )
        causes = [
            "Packet loss on the path (the final ACK dropped).",
            "A firewall or NAT that dropped its state after the first FIN and discards the ACK.",
        ]
        fixes = [
            "Usually none for a single occurrence. Many LAST_ACK sockets (`ss -tano state "
            "last-ack`) point at loss or a stateful middlebox; check its timeouts for closing "
            "connections.",
            "net.ipv4.tcp_max_tw_buckets too low makes the peer drop TIME_WAIT sockets "
            "(TcpExtTCPTimeWaitOverflow): raise it.",
        ]
        out.append(
            make_finding(
                diag,
                KIND,
                Severity.WARNING if resets else Severity.INFO,
                summary,
                inst,
                explanation,
                causes,
                fixes,
                knowledge.RESET if resets else knowledge.NONE_VISIBLE,
                {"server": server, "reset": resets},
            )
        )
    return out
