"""middlebox-reset: a RST that the peer did not send, judged by its IP TTL or its timing.

A RST whose TTL differs from every other packet of the same sender in the
connection came through a different number of hops (or was forged by a box
on the path). A RST that answers a segment sooner than a round trip to its
sender allows came from something closer (`resets.too_fast`), wherever the
capture was taken.
"""

from __future__ import annotations

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits, earliest, first_resets
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.pairing import (
    Injected,
    OtherPoint,
    PairedInstance,
    injected_what,
    other_point_steps,
)
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.diagnose.resets import too_fast, trigger, usual_ttl

ORDER = 200

_BELOW_IDLE = (
    knowledge.Fix("any", None, None, "Keep connections below the middlebox's idle timeout: TCP "
                  "keep-alive or application pings more often than it."),
    knowledge.sysctl("net.ipv4.tcp_keepalive_time", None,
                     "TCP keep-alive (SO_KEEPALIVE) with net.ipv4.tcp_keepalive_time, or "
                     "TCP_KEEPIDLE per socket, below the middlebox's idle timeout"),
    *knowledge.CLIENT_IDLE,
)  # fmt: skip
"""Staying under a middlebox's idle timeout: keep-alive, or a shorter client pool idle time."""

KIND = "middlebox-reset"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c, r in first_resets(diag):
        if c.on_one_host:
            continue  # no path between the ends for anything to sit on
        x = c.at("side", r)
        if _closed_before(c, r):
            continue  # both FINs were acknowledged: the RST ended nothing
        why = _not_from_peer(c, r)
        if not why:
            continue
        rows = [(r, f"RST 'from the {WHO[x]}': {why}")]
        trig = trigger(c, r)
        if trig is not None:
            rows.insert(0, (trig, f"{WHO[c.side[trig]]} segment the RST answers"))
        hits.add(c.server, c, rows, {"why": why, "sender": WHO[x], "certainty": "likely"})
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def from_path(
    diag: Diag,
    seen: list[Injected],
    views: dict[int, OtherPoint],
    here: str,
    there: str,
    others: list[Injected] | None = None,
) -> list[Finding]:
    """RSTs proven made on the path by a capture of the same connections nearer their
    sender: `seen` the injected RSTs at this point (`pairing.Injected`), `views` the other
    point's view of each of their connections (by stream id here), `here` and `there` the
    two points' names; `others` the other segments injected into those connections, which
    the finding's timeline lists too."""
    groups: dict[str, list[Instance]] = {}
    extra: dict[int, list[int]] = {}
    for x in others or []:
        extra.setdefault(x.sid, []).append(x.row)
    for x in seen:
        c = diag.cap.conn(x.sid)
        local = {int(row): i for i, row in enumerate(c.rows.tolist())}
        r = local[x.row]
        side = c.side[r]
        why = (
            f"the capture at {there} holds this connection, and the {WHO[side]} never sent this RST"
        )
        rows = [(r, f"RST 'from the {WHO[side]}': {why}")]
        trig = trigger(c, r)
        if trig is not None:
            lost = f"; it never reached {there}" if x.answers_lost else ""
            rows.insert(0, (trig, f"{WHO[c.side[trig]]} segment the RST answers{lost}"))
        for row in extra.get(x.sid, []):
            k = local[row]
            rows.append(
                (
                    k,
                    f"{injected_what(c, k)} 'from the {WHO[c.side[k]]}': also never sent at {there}",
                )
            )
        facts = {
            "why": why,
            "sender": WHO[side],
            "certainty": "certain",
            "seen_at": [here, there],
            "answers_lost": x.answers_lost,
        }
        far = other_point_steps(views[x.sid], c, r, trig, "RST", here)
        groups.setdefault(c.server, []).append(PairedInstance(c, rows, facts, far))
        diag.claim(x.sid)
    return [
        make_finding(diag, KIND, inst, _tell(Group(key, inst, min(inst, key=earliest))))
        for key, inst in groups.items()
    ]


def _closed_before(c: Conn, r: int) -> bool:
    """Both sides' FINs were sent and acknowledged before row r, and neither sent its FIN
    again after the acknowledgment (a FIN resent from LAST_ACK means that ACK never reached
    its sender: the connection was still open there when the RST came)."""
    for who in (CLIENT, SERVER):
        f = c.first_fin(who)
        if f is None or f > r:
            return False
        acked = c.fin_acked_by(1 - who, f, stop=r)
        if acked is None:
            return False
        if any(c.side[j] == who and c.is_fin(j) for j in range(acked + 1, r)):
            return False
    return True


def _not_from_peer(c: Conn, r: int) -> str:
    """Why the RST at row r cannot come from its sender ("" if it may): its TTL, or it came
    back faster than the server's round trip allows."""
    x = c.at("side", r)
    ttl = usual_ttl(c, x, r)
    if ttl is not None and abs(ttl - c.at("ttl", r)) >= 2:
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
    return too_fast(c, r)


def _tell(g: Group) -> Story:
    c = g.c
    if g.facts["certainty"] == "certain":
        return _tell_certain(g)
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
        causes=list(_CAUSES),
        fixes=[
            _keep_below(),
            "Capture on the peer at the same time: if the peer never sent this RST, it was "
            "made on the path; then check the middlebox's logs and timeouts.",
        ],
        errors=knowledge.RESET,
        facts={"server": g.key, "certainty": "likely"},
    )


_CAUSES = (
    "A stateful middlebox (LB, NAT, firewall) that resets connections it no longer "
    "tracks, typically after its idle timeout (AWS NLB 350 s).",
    "An intrusion-prevention or policy device injecting resets.",
)


def _keep_below() -> str:
    return knowledge.advice(
        "Keep connections below the middlebox's idle timeout: TCP keep-alive or "
        "application pings more often than it, or a client pool idle timeout shorter "
        "than it.",
        *_BELOW_IDLE,
    )


def _tell_certain(g: Group) -> Story:
    c = g.c
    here, there = g.facts["seen_at"]
    lost = (
        f" The segment it answers never reached {there} either: the box took it and answered "
        "in the peer's name."
        if g.facts["answers_lost"]
        else ""
    )
    return Story(
        Severity.WARNING,
        summary=(
            f"{plural(g.n, 'connection')} to {g.key} reset by something on the path, not by the "
            "peer (proven by captures at both ends)"
        ),
        explanation=(
            f"On {c.label()} a RST arrives at {here} claiming to come from the "
            f"{g.facts['sender']}, but {g.facts['why']}: it was made between the two capture "
            f"points, by a firewall, load balancer, NAT or IDS on the path.{lost} A box that "
            "answers this way has usually forgotten the connection (its idle timeout) and "
            "resets segments of flows it no longer tracks."
        ),
        causes=list(_CAUSES),
        fixes=[
            _keep_below(),
            "Find the box between the two capture points (its logs, its idle timeout).",
        ],
        errors=knowledge.RESET,
        facts={"server": g.key, "certainty": "certain", "seen_at": [here, there]},
    )
