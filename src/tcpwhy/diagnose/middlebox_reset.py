"""middlebox-reset: a RST that the peer did not send, judged by its IP TTL or its timing (K5, P4).

A RST whose TTL differs from every other packet of the same sender in the
connection came through a different number of hops (or was forged by a box
on the path). A RST that answers a client segment faster than the server's
round trip could, in a client-side capture, came from something closer.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.diagnose.resets import trigger, usual_ttl

KIND = "middlebox-reset"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    groups: dict[str, list[Instance]] = defaultdict(list)
    for sid in np.flatnonzero(cap.n_rst.sum(1) > 0):
        if diag.is_claimed(int(sid)):
            continue
        c = cap.conn(int(sid))
        r = c.first_rst()
        assert r is not None
        x = c.side[r]
        ttl = usual_ttl(c, x, r)
        why = ""
        if ttl is not None and abs(ttl - c.ttl[r]) >= 2:
            why = f"its IP TTL is {c.ttl[r]}, every other packet from the {WHO[x]} has {ttl}"
        else:
            trig = trigger(c, r)
            syn_rtt = _client_side_rtt(c)
            if (
                x == SERVER
                and trig is not None
                and syn_rtt is not None
                and syn_rtt >= 0.002
                and c.dt(trig, r) < 0.3 * syn_rtt
            ):
                why = (
                    f"it arrived {fmt_s(c.dt(trig, r))} after the segment it answers, while the "
                    f"server's round trip is {fmt_s(syn_rtt)}"
                )
        if not why:
            continue
        rows = [(r, f"RST 'from the {WHO[x]}': {why}")]
        trig = trigger(c, r)
        if trig is not None:
            rows.insert(0, (trig, f"{WHO[c.side[trig]]} segment the RST answers"))
        groups[c.server].append(Instance(c, rows, {"why": why, "sender": WHO[x]}))
        diag.claim(c.sid)
    out = []
    for server, inst in groups.items():
        ex = min(inst, key=lambda i: i.first_ns)
        c = ex.conn
        n = len(inst)
        summary = (
            f"{plural(n, 'connection')} to {server} reset by something on the path, not by the peer"
        )
        explanation = (
            f"On stream {c.sid} ({c.client} → {c.server}) a RST claims to come from the "
            f"{ex.facts['sender']}, but {ex.facts['why']}. A packet the peer sent would have "
            "crossed the same hops and taken at least its round trip; this one did not, so a "
            "firewall, load balancer, NAT or IDS on the path most likely generated it (for "
            "example after its idle timeout dropped the connection's state)."
        )
        causes = [
            "A stateful middlebox (LB, NAT, firewall) that resets connections it no longer "
            "tracks, typically after its idle timeout (AWS NLB 350 s).",
            "An intrusion-prevention or policy device injecting resets.",
        ]
        fixes = [
            "Keep connections below the middlebox's idle timeout: TCP keep-alive or "
            "application pings more often than it, or a client pool idle timeout shorter "
            "than it.",
            "Capture on the peer at the same time: if the peer never sent this RST, it was "
            "made on the path; then check the middlebox's logs and timeouts.",
        ]
        out.append(
            make_finding(
                diag,
                KIND,
                Severity.WARNING,
                summary,
                inst,
                explanation,
                causes,
                fixes,
                knowledge.RESET,
                {"server": server},
            )
        )
    return out


def _client_side_rtt(c: object) -> float | None:
    """SYN → SYN-ACK as seen at the capture point, when it looks like the client's side."""
    from tcpwhy.decode.table import ACK, RST, SYN
    from tcpwhy.diagnose.context import Conn

    assert isinstance(c, Conn)
    syn = sa = None
    for i in range(c.n):
        f = c.flags[i]
        if f & RST:
            continue
        if c.side[i] == CLIENT and (f & (SYN | ACK)) == SYN:
            syn = i
        elif c.side[i] == SERVER and (f & (SYN | ACK)) == (SYN | ACK) and syn is not None:
            sa = i
            break
    if syn is None or sa is None:
        return None
    rtt = c.rtt
    near_client = rtt is not None and c.dt(syn, sa) >= 0.8 * rtt
    return c.dt(syn, sa) if near_client else None
