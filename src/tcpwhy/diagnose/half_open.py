"""half-open-reset: the peer lost the connection without a FIN; the next segment draws RST."""

from __future__ import annotations

from tcpwhy.decode.table import ACK
from tcpwhy.diagnose import http, knowledge
from tcpwhy.diagnose.common import Group, Hits, resets_before_fin
from tcpwhy.diagnose.context import WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.resets import too_fast, trigger

ORDER = 210

KIND = "half-open-reset"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c, r, x in resets_before_fin(diag):
        if c.at("flags", r) & ACK:  # [R.]: an abort by the application, not an answer
            continue
        trig = trigger(c, r)
        if trig is None or too_fast(c, r):
            continue  # no answer to a segment, or too quick to be the peer's kernel
        prev_x = max((i for i in range(r) if c.side[i] == x), default=None)
        if prev_x is None:
            continue
        idle = c.dt(prev_x, trig)
        what = http.describe_request(c, trig) if c.plen[trig] > 0 else "a keep-alive probe or ACK"
        rows = [
            (prev_x, f"last packet from the {WHO[x]}; the connection is idle"),
            (trig, f"{WHO[1 - x]} sends {what} {fmt_s(idle)} later"),
            (r, f"{WHO[x]} kernel has no such connection: bare RST"),
        ]
        hits.add(c.server, c, rows, {"idle_s": round(idle, 3), "x": x})
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    c, x = g.c, g.facts["x"]
    gone, alive = WHO[x], WHO[1 - x]
    return Story(
        Severity.ERROR,
        summary=(
            f"{plural(g.n, 'connection')} to {g.key} found dead on use: the {gone} had lost them "
            "without a FIN, the next segment drew a RST"
        ),
        explanation=(
            f"On {c.label()} the {gone} sent nothing for "
            f"{fmt_s(g.facts['idle_s'])}; it never closed the connection (no FIN, no RST seen). "
            f"When the {alive} sent again, the {gone}'s kernel answered with a bare RST whose "
            "sequence number is exactly the acknowledgment the segment carried — the answer a "
            "kernel gives to a segment for a connection it does not know. The connection was "
            f"half-open: the {alive} still believed it ESTABLISHED. Its application now reads "
            "'Connection reset by peer'."
        ),
        causes=[
            f"The {gone} process or host restarted (crash, reboot, failover, container "
            "rescheduled) and lost its sockets; its close was never seen on the wire.",
            f"The {gone}'s RST or FIN was dropped on the way (a firewall, a one-way outage).",
            "A NAT or load balancer in front of the peer forgot the connection and now maps "
            "it to another host.",
        ],
        fixes=[
            knowledge.advice(
                "Detect dead connections before use: TCP keep-alive (TCP_KEEPIDLE below any "
                "middlebox idle timeout), application heartbeats, pool validation on borrow.",
                knowledge.Fix(
                    "linux",
                    "TCP_KEEPIDLE",
                    None,
                    "TCP keep-alive with TCP_KEEPIDLE below any middlebox idle timeout",
                ),
                knowledge.Fix(
                    "any", None, None, "application heartbeats, pool validation on borrow"
                ),
            ),
            knowledge.advice(
                "Retry idempotent requests once on 'Connection reset by peer' from a reused "
                "connection.",
                knowledge.Fix(
                    "any",
                    None,
                    None,
                    "Retry idempotent requests once on 'Connection reset by "
                    "peer' from a reused connection.",
                ),
                *knowledge.RETRY,
            ),
        ],
        errors=knowledge.RESET,
        facts={"server": g.key},
    )
