"""keepalive-race: the request and the server's idle-close FIN crossed in flight.

Told apart from stale reuse by ACK numbers alone: the request does not
acknowledge the FIN and the FIN does not acknowledge the request, so each
side sent before it saw the other's segment. No client-side validation can
prevent it; only timeout ordering, retries, or `Connection: close` can.
"""

from __future__ import annotations

from tcpwhy.diagnose import http, knowledge
from tcpwhy.diagnose.closing import AfterFin, after_fin, recommend_below, server_idle_timeout
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import SERVER, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.resets import too_fast

ORDER = 70

KIND = "keepalive-race"


def is_race(ev: AfterFin) -> bool:
    c = ev.conn
    last = c.last_data_before(min(ev.fin, ev.data))
    idle = last is not None and c.dt(last, min(ev.fin, ev.data)) >= max(0.05, 5 * (c.rtt or 0.0))
    # a RST too quick to be the server's is left to middlebox-reset
    return ev.closer == SERVER and not ev.covers and ev.reused and idle and not too_fast(c, ev.rst)


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for ev in after_fin(diag):
        if not is_race(ev):
            continue
        c = ev.conn
        last = c.last_data_before(min(ev.data, ev.fin))
        rows = [
            (ev.data, f"client sends {http.describe_request(c, ev.data)} (has not seen a FIN)"),
            (ev.fin, "server closes the idle connection (FIN); it has not seen the request"),
            (ev.rst, "server kernel answers the request with RST"),
        ]
        if last is not None:
            rows.insert(0, (last, "last exchange; the connection then sits idle"))
        idle = c.dt(last, min(ev.data, ev.fin)) if last is not None else None
        hits.add(c.server, c, rows, {"ev": ev, "idle_s": idle})
        diag.claim(c.sid)
    # the text tells about the first FIN
    return hits.findings(
        diag, KIND, lambda g: _tell(diag, g), lambda i: i.conn.ts[i.facts["ev"].fin]
    )


def _tell(diag: Diag, g: Group) -> Story:
    server, c, n = g.key, g.c, g.n
    ex: AfterFin = g.facts["ev"]
    idles = [v for v in g.values("idle_s") if v is not None]
    st = server_idle_timeout(diag, server)
    req = http.describe_request(c, ex.data)
    summary = (
        f"{req} to {server} crossed the server's idle-close FIN in flight; the server reset it"
        if n == 1
        else f"{n} requests to {server} crossed the server's idle-close FIN in flight"
    )
    first, second = sorted([ex.data, ex.fin])
    explanation = (
        f"On {c.label()} the connection was idle for "
        f"{fmt_s(idles[0]) if idles else 'a while'}. The client sent {req} "
        f"(frame {c.frame[ex.data]}) and the server sent its FIN (frame {c.frame[ex.fin]}) "
        f"{fmt_s(abs(c.dt(first, second)))} apart. Neither had seen the other's segment: the "
        f"request's acknowledgment number ({c.rack[ex.data]}) does not cover the FIN and the "
        f"FIN's ({c.rack[ex.fin]}) does not cover the request — they crossed on the path. "
        "The server had already closed its socket, so its kernel answered the request with "
        f"RST (frame {c.frame[ex.rst]}). The client's socket was still ESTABLISHED when "
        "the request left, so its application sees an EOF or 'Connection reset by peer' "
        "instead of a response. Unlike stale reuse, a client that checks idle connections "
        "before use cannot avoid this: it happens exactly when the client's idle time "
        "reaches the server's idle timeout."
    )
    if st is not None:
        explanation += f"\n\nMeasured across connections, {st.text()}."
    if n > 1:
        explanation += f"\n\nThe same crossing happened on {plural(n, 'connection')}."
    t = st.median_s if st is not None else None
    causes = [
        "The client's idle timeout equals (or is very close to) the server's"
        + (f" {t:.2f} s" if t is not None else "")
        + ", so the client reuses connections at the moment the server closes them.",
        "Both sides time out idle connections at the same moment (equal defaults).",
    ]
    lead = "Order the timeouts so that the client always closes first: client idle timeout " + (
        f"at most {recommend_below(t)}" if t is not None else "a few seconds below the server's"
    )
    value = knowledge.seconds(recommend_below(t)) if t is not None else None
    server_lead = (
        "Server side: announce the idle timeout (Keep-Alive: timeout=N) or send "
        "Connection: close on the last response before closing"
    )
    fixes = [
        knowledge.client_idle_advice(lead, value),
        knowledge.retry_advice("on a reused connection"),
        knowledge.advice(
            f"{server_lead}; {knowledge.SERVER_IDLE_KNOBS}.",
            knowledge.Fix("any", None, None, server_lead),
            *knowledge.SERVER_IDLE,
        ),
    ]
    facts = {"server": server, "requests_lost": n}
    errors = knowledge.EOF_ON_REUSE + knowledge.RESET
    return Story(Severity.ERROR, summary, explanation, causes, fixes, errors, facts)
