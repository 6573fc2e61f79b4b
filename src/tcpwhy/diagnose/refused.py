"""connection-refused: a SYN answered by RST — nobody listened on the port."""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, RST
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import CountedGroup, Group, by_server, first_positions
from tcpwhy.diagnose.context import CLIENT, SERVER, fmt_between, fmt_s
from tcpwhy.diagnose.handshake import first_syn_positions
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import (
    FRAME_INSTANCES,
    Claim,
    Diag,
    Instance,
    finding_from_columns,
    plural,
    rule,
)

ORDER = 100

KIND = "connection-refused"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    """Columns, not a `Conn` per connection: a closed port under load refuses thousands;
    instances are built for each server's first connections only."""
    cap = diag.cap
    m = (cap.n_syn[:, CLIENT] > 0) & (cap.n_synack[:, SERVER] == 0) & (cap.n_rst[:, SERVER] > 0)
    m &= ~diag.claimed_mask(Claim.SYN)  # a scan's probes: one port-scan finding, no Conn each
    sid = np.flatnonzero(m)
    if not len(sid):
        return []
    # the client's first SYN and the server's first RST
    syn = first_syn_positions(cap, sid)
    side, flags = cap.in_order("side"), cap.in_order("flags")
    rst = first_positions(cap, sid, (side == SERVER) & ((flags & RST) != 0))
    ok = (syn >= 0) & (rst >= syn)
    sid, syn, rst = sid[ok], syn[ok], rst[ok]
    if not len(sid):
        return []
    diag.claim_streams(sid, Claim.SYN)
    diag.claim_streams(sid)
    ts = cap.table["ts_ns"]
    a, b = ts[cap.order[syn]].astype(np.int64), ts[cap.order[rst]].astype(np.int64)
    first_ns, last_ns = np.minimum(a, b), np.maximum(a, b)
    out = []
    for server, idx in by_server(cap, sid):
        idx = idx[np.argsort(first_ns[idx], kind="stable")]
        inst = []
        for k in idx[:FRAME_INSTANCES].tolist():
            s = int(sid[k])
            start = int(cap.starts[s])
            rows = [
                (int(syn[k]) - start, "client opens: SYN"),
                (int(rst[k]) - start, "server answers with RST: no socket listens on this port"),
            ]
            inst.append(Instance(cap.conn(s), rows))
        lo, hi = int(first_ns[idx].min()), int(last_ns[idx].max())
        story = _tell(CountedGroup(server, inst, inst[0], len(idx), lo, hi))
        nos = cap.stream_numbers[sid[idx]]
        out.append(finding_from_columns(diag, KIND, story, inst, nos, lo, hi))
    return out


def _tell(g: Group) -> Story:
    server, c, n = g.key, g.c, g.n
    syn, rst = g.ex.rows[0][0], g.ex.rows[1][0]
    acked = bool(c.flags[rst] & ACK) and c.rack[rst] == 1
    span = (g.last_ns - g.first_ns) / 1e9
    summary = f"{plural(n, 'connection')} to {server} refused (SYN answered by RST)"
    if n > 1:
        summary += f" over {fmt_s(span)}"
    explanation = (
        f"On stream {c.no} the client {c.client} sent a SYN to {server} (frame "
        f"{c.frame[syn]}) and got a RST back {fmt_s(c.dt(syn, rst))} later (frame "
        f"{c.frame[rst]})"
        + (
            ", acknowledging exactly the SYN (ack = ISN+1) as a kernel does when no socket "
            "listens on the port"
            if acked
            else ""
        )
        + ". The client's connect() fails at once with ECONNREFUSED; nothing reached an "
        "application. An answer within one round trip means the host is up but the port "
        "is closed (or a firewall REJECTs it); a dropped SYN would wait for the SYN "
        "timeout instead."
    )
    if n > 1:
        explanation += (
            f"\n\n{plural(n, 'connection')} were refused "
            f"{fmt_between(c.cap.start_ns, g.first_ns, g.last_ns)}."
        )
    causes = [
        "The service is not listening on this port: not started yet, restarting or "
        "crashed, or bound to another address (127.0.0.1 vs 0.0.0.0) or network namespace.",
        "A deploy or restart window: clients connect before the new process listens, or "
        "after the old one stopped.",
        "The client uses the wrong port or address (configuration, DNS, service discovery).",
        "A firewall rule that REJECTs with a TCP reset.",
    ]
    fixes = [
        f"On the server host check `ss -lnt 'sport = :{server.rsplit(':', 1)[1]}'`: no "
        "LISTEN row means nothing listens there.",
        knowledge.advice(
            "Bind the listener before announcing readiness (health checks, service discovery); "
            "stop accepting and drain before closing; overlap old and new processes with "
            "SO_REUSEPORT (and net.ipv4.tcp_migrate_req) during restarts.",
            knowledge.Fix(
                "any",
                None,
                None,
                "Bind the listener before announcing readiness (health checks, service discovery); stop accepting and drain before closing",
            ),
            knowledge.Fix(
                "linux",
                "SO_REUSEPORT",
                None,
                "overlap old and new processes with SO_REUSEPORT during restarts",
            ),
            knowledge.sysctl(
                "net.ipv4.tcp_migrate_req",
                "1",
                "moves queued connections to a remaining SO_REUSEPORT listener when one closes",
            ),
        ),
        "Let clients retry refused connects with backoff (they are safe to retry: nothing "
        "was sent).",
    ]
    return Story(
        Severity.ERROR, summary, explanation, causes, fixes, knowledge.REFUSED, {"server": server}
    )
