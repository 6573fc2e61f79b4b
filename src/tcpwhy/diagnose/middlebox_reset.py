"""middlebox-reset: a RST that the peer did not send, judged by its IP TTL or its timing.

A RST whose TTL differs from every other packet of the same sender in the
connection came through a different number of hops (or was forged by a box
on the path). A RST that answers a client segment faster than the server's
round trip could, in a client-side capture, came from something closer.
"""

from __future__ import annotations

from tcpwhy.decode.table import ACK, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits, first_resets
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.resets import trigger, usual_ttl

KIND = "middlebox-reset"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c, r in first_resets(diag):
        x = c.side[r]
        if _closed_before(c, r):
            continue  # both FINs were acknowledged: the RST ended nothing
        why = _not_from_peer(c, r)
        if not why:
            continue
        rows = [(r, f"RST 'from the {WHO[x]}': {why}")]
        trig = trigger(c, r)
        if trig is not None:
            rows.insert(0, (trig, f"{WHO[c.side[trig]]} segment the RST answers"))
        hits.add(c.server, c, rows, {"why": why, "sender": WHO[x]})
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _closed_before(c: Conn, r: int) -> bool:
    """Both sides' FINs were sent and acknowledged before row r."""
    for who in (CLIENT, SERVER):
        f = c.first_fin(who)
        if f is None or f > r or c.fin_acked_by(1 - who, f, stop=r) is None:
            return False
    return True


def _not_from_peer(c: Conn, r: int) -> str:
    """Why the RST at row r cannot come from its sender ("" if it may): its TTL, or it came
    back faster than the server's round trip allows."""
    x = c.side[r]
    ttl = usual_ttl(c, x, r)
    if ttl is not None and abs(ttl - c.ttl[r]) >= 2:
        own = [i for i in range(c.n) if c.side[i] == x and i != r and not c.is_rst(i)]
        alike = [i for i in own if abs(c.ttl[i] - c.ttl[r]) < 2]
        if not alike:
            return f"its IP TTL is {c.ttl[r]}, every other packet from the {WHO[x]} has {ttl}"
        frames = ", ".join(str(c.frame[i]) for i in alike[:5])
        return (
            f"its IP TTL is {c.ttl[r]}, while {len(own) - len(alike)} of the {WHO[x]}'s "
            f"{len(own)} other packets have {ttl}; the only ones with TTL near "
            f"{c.ttl[r]} (frames {frames}) most likely came from the same box as the RST"
        )
    trig = trigger(c, r)
    syn_rtt = _client_side_rtt(c)
    if (
        x == SERVER
        and trig is not None
        and syn_rtt is not None
        and syn_rtt >= 0.002
        and c.dt(trig, r) < 0.3 * syn_rtt
    ):
        return (
            f"it arrived {fmt_s(c.dt(trig, r))} after the segment it answers, while the "
            f"server's round trip is {fmt_s(syn_rtt)}"
        )
    return ""


def _tell(g: Group) -> Story:
    c = g.c
    return Story(
        Severity.WARNING,
        summary=(
            f"{plural(g.n, 'connection')} to {g.key} reset by something on the path, not by the peer"
        ),
        explanation=(
            f"On {c.label()} a RST claims to come from the "
            f"{g.facts['sender']}, but {g.facts['why']}. A packet the peer sent would have "
            "crossed the same hops and taken at least its round trip; this one did not, so a "
            "firewall, load balancer, NAT or IDS on the path most likely generated it (for "
            "example after its idle timeout dropped the connection's state)."
        ),
        causes=[
            "A stateful middlebox (LB, NAT, firewall) that resets connections it no longer "
            "tracks, typically after its idle timeout (AWS NLB 350 s).",
            "An intrusion-prevention or policy device injecting resets.",
        ],
        fixes=[
            "Keep connections below the middlebox's idle timeout: TCP keep-alive or "
            "application pings more often than it, or a client pool idle timeout shorter "
            "than it.",
            "Capture on the peer at the same time: if the peer never sent this RST, it was "
            "made on the path; then check the middlebox's logs and timeouts.",
        ],
        errors=knowledge.RESET,
        facts={"server": g.key},
    )


def _client_side_rtt(c: Conn) -> float | None:
    """SYN → SYN-ACK as seen at the capture point, when it looks like the client's side."""
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
