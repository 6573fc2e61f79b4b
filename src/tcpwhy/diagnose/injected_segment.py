"""injected-segment: a segment (data, FIN, ACK) made on the path in an endpoint's name.

One capture cannot tell such a segment from the endpoint's own: its addresses, ports and
sequence numbers are the connection's. With a second capture of the same connection
nearer that endpoint, a segment seen at one point that the endpoint's side never sent is
proven made in between (`pairing` counts them as `only_in_a` / `only_in_b`). Injected RSTs
are `middlebox-reset` (certain); this kind tells every other injected segment, of the
connections that had no injected RST. The rule itself finds nothing in one capture: the
engine makes the finding from a pair of capture points (`from_path`).
"""

from __future__ import annotations

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, earliest
from tcpwhy.diagnose.context import WHO
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.pairing import (
    Injected,
    OtherPoint,
    PairedInstance,
    injected_what,
    other_point_steps,
)
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.diagnose.resets import usual_ttl

ORDER = 205

KIND = "injected-segment"

ERRORS = [
    "data the peer never sent: a protocol parser's error (an HTTP 'invalid response', "
    "a TLS 'bad record MAC' or 'decryption failed'), or a page the application did not ask "
    "for (a block or captive-portal page)",
    "an end of file the peer never sent (an injected FIN): read() returns 0, 'Connection "
    "closed by peer'",
]


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    """Nothing from one capture: see the module's docstring."""
    return []


def from_path(
    diag: Diag, seen: list[Injected], views: dict[int, OtherPoint], here: str, there: str
) -> list[Finding]:
    """Segments other than RSTs proven made on the path: `seen` those seen at this point
    (`here`) that the capture at `there` shows their sender never sent, `views` the other
    point's view of each of their connections (by stream id here)."""
    by_sid: dict[int, list[Injected]] = {}
    for x in seen:
        by_sid.setdefault(x.sid, []).append(x)
    groups: dict[str, list[Instance]] = {}
    for sid, xs in by_sid.items():
        c = diag.cap.conn(sid)
        local = {int(row): i for i, row in enumerate(c.rows.tolist())}
        idx = sorted(local[x.row] for x in xs)
        first = idx[0]
        side = c.side[first]
        rows = []
        for r in idx:
            what = injected_what(c, r)
            lost = (
                " (the peer's segment before it never reached it either)"
                if any(y.answers_lost for y in xs if local[y.row] == r)
                else ""
            )
            rows.append((r, f"{what} 'from the {WHO[c.side[r]]}': {there} never saw it sent{lost}"))
        ttl = usual_ttl(c, side, first)
        facts = {
            "sender": WHO[side],
            "certainty": "certain",
            "seen_at": [here, there],
            "segments": len(idx),
            "what": [injected_what(c, r) for r in idx],
            "ttl": int(c.ttl[first]),
            "sender_ttl": ttl,
        }
        far = other_point_steps(views[sid], c, first, None, injected_what(c, first), here)
        groups.setdefault(c.server, []).append(PairedInstance(c, rows, facts, far))
    return [
        make_finding(diag, KIND, inst, _tell(Group(key, inst, min(inst, key=earliest))))
        for key, inst in groups.items()
    ]


def _tell(g: Group) -> Story:
    c, f = g.c, g.facts
    here, there = f["seen_at"]
    segs = sum(i.facts["segments"] for i in g.inst)
    what = ", ".join(dict.fromkeys(f["what"]))
    ttl = ""
    if f["sender_ttl"] is not None and abs(f["sender_ttl"] - f["ttl"]) >= 2:
        ttl = (
            f" Its IP TTL is {f['ttl']} where the {f['sender']}'s own packets arrive with "
            f"{f['sender_ttl']}: the box is a different number of hops away."
        )
    fin = "FIN" in f["what"]
    return Story(
        Severity.WARNING,
        summary=(
            f"{plural(g.n, 'connection')} to {g.key}: {plural(segs, 'segment')} injected on the "
            "path in an endpoint's name (proven by captures at both ends)"
        ),
        explanation=(
            f"On {c.label()} {here} received a {what} that claims to come from the "
            f"{f['sender']}, but the capture at {there} holds this connection and the "
            f"{f['sender']} never sent it: it was made between the two capture points.{ttl} "
            "Something on the path writes into the connection: a transparent proxy or WAN "
            "optimizer acknowledging or answering for the peer, an intrusion-prevention "
            "system or captive portal injecting a block page or a FIN, or a NAT or "
            "application-level gateway rewriting a segment (a segment changed on the way "
            "shows as one lost and one injected: compare the two points' segments around it)."
            + (
                " An injected FIN closes the connection in the peer's name: what either "
                "capture point concluded about its end is replaced by this finding."
                if fin
                else ""
            )
        ),
        causes=[
            "A transparent TCP proxy, WAN optimizer or load balancer that acknowledges or "
            "answers segments for the peer.",
            "An intrusion-prevention system, content filter or captive portal injecting a "
            "block page or ending the connection with a FIN.",
            "A NAT or application-level gateway (FTP, SIP ALG) rewriting segments.",
        ],
        fixes=[
            "Find the box between the two capture points (`traceroute`; the injected "
            "segment's TTL against the peer's tells how many hops away it is) and check its "
            "policy and logs: pass the connection through, or exempt it from inspection.",
            "Capture on both sides of a suspected box to narrow it down further.",
        ],
        errors=ERRORS if any(w != "ACK" for w in f["what"]) else knowledge.NONE_VISIBLE,
        facts={
            "server": g.key,
            "certainty": "certain",
            "seen_at": [here, there],
            "segments": segs,
        },
    )
