"""data-after-fin: data written after the writer had received the peer's FIN, answered by RST.

The general form of stale reuse: any side (a server writing a late response
after the client gave up and closed, a protocol without pooling) that keeps
writing in CLOSE_WAIT. The peer's socket is closed for reading, so the data
draws a RST and the writer's next call fails with EPIPE (K4).
"""

from __future__ import annotations

from tcpwhy.diagnose import http, knowledge
from tcpwhy.diagnose.closing import after_fin
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, WHO, fmt_s
from tcpwhy.diagnose.keepalive_race import is_race
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.stale_keepalive import is_stale

KIND = "data-after-fin"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for ev in after_fin(diag):
        if is_stale(ev) or is_race(ev) or diag.is_claimed(ev.conn.sid):
            continue
        c = ev.conn
        w = WHO[1 - ev.closer]
        rows = [
            (ev.fin, f"{WHO[ev.closer]} closes (FIN)"),
            (
                ev.data,
                f"{w} still writes {c.plen[ev.data]} bytes"
                + ("" if ev.covers else " (crossing the FIN)"),
            ),
            (ev.rst, f"{WHO[ev.closer]} kernel answers with RST"),
        ]
        facts = {"covers": ev.covers, "fin": ev.fin, "data": ev.data, "rst": ev.rst}
        hits.add((c.server, ev.closer), c, rows, facts)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    (server, closer), ex, c, n = g.key, g.ex, g.c, g.n
    fin_i, data_i, rst_i = ex.facts["fin"], ex.facts["data"], ex.facts["rst"]
    closer_name, writer = WHO[closer], WHO[1 - closer]
    msg = http.describe_request(c, data_i) if closer != CLIENT else f"{c.plen[data_i]} bytes"
    summary = (
        f"the {writer} wrote {msg} after the {closer_name} had closed "
        f"({plural(n, 'connection')} to {server}); answered by RST"
    )
    explanation = (
        f"On {c.label()} the {closer_name} closed the "
        f"connection (frame {c.frame[fin_i]}, FIN). "
        + (
            f"The {writer} had received that FIN — its data (frame {c.frame[data_i]}, "
            f"{fmt_s(c.dt(fin_i, data_i))} later) acknowledges it, and its socket was in "
            "CLOSE_WAIT — "
            if ex.facts["covers"]
            else f"The {writer}'s data (frame {c.frame[data_i]}) crossed that FIN in flight "
        )
        + f"yet it still wrote {msg}. The {closer_name}'s socket was closed for reading, so "
        f"its kernel answered with RST (frame {c.frame[rst_i]}). The {writer}'s application "
        "gets 'Broken pipe' (EPIPE) on its next write or an EOF on read; the data was lost."
    )
    causes = [
        f"The {writer} application does not watch for the {closer_name}'s close (it never "
        "reads, or reads only after writing) and writes into a half-closed connection.",
        f"The {closer_name} gave up first (a client timeout or cancellation while the "
        f"{writer} was still working) and the {writer} wrote its late answer.",
    ]
    fixes = [
        f"In the {writer}: treat read() == 0 (EOF) as the end of the connection and close "
        "it; check for a pending close before writing on an idle connection.",
        "Align timeouts end to end (client timeout > proxy timeout > server processing "
        "budget) or propagate deadlines so the late side stops working; nginx "
        "proxy_ignore_client_abort decides whether upstream work continues.",
    ]
    facts = {"server": server, "closer": closer_name}
    errors = knowledge.BROKEN_PIPE + knowledge.RESET
    return Story(Severity.WARNING, summary, explanation, causes, fixes, errors, facts)
