"""simultaneous-close: both FINs crossed, both endpoints went through CLOSING (P13). Info only."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.context import CLIENT, SERVER
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.tcp.state import State

KIND = "simultaneous-close"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    groups: dict[str, list[Instance]] = defaultdict(list)
    for sid in np.flatnonzero((cap.n_fin[:, 0] > 0) & (cap.n_fin[:, 1] > 0)):
        c = cap.conn(int(sid))
        cc = c.entered(CLIENT, State.CLOSING)
        sc = c.entered(SERVER, State.CLOSING)
        if not cc or not sc:
            continue
        cf, sf = c.first_fin(CLIENT), c.first_fin(SERVER)
        assert cf is not None and sf is not None
        rows = [
            (cf, "client closes (FIN)"),
            (sf, "server closes (FIN) before it saw the client's"),
        ]
        tw = c.entered(CLIENT, State.TIME_WAIT) + c.entered(SERVER, State.TIME_WAIT)
        if tw:
            rows.append((max(tw), "each side has acknowledged the other's FIN: both in TIME_WAIT"))
        groups[c.server].append(Instance(c, rows))
    out = []
    for server, inst in groups.items():
        ex = min(inst, key=lambda i: i.first_ns)
        c = ex.conn
        cf, sf = ex.rows[0][0], ex.rows[1][0]
        n = len(inst)
        summary = (
            f"{plural(n, 'connection')} to {server} closed by both sides at once (FINs crossed)"
        )
        explanation = (
            f"On stream {c.sid} the client's FIN (frame {c.frame[cf]}, ack={c.rack[cf]}) and the "
            f"server's FIN (frame {c.frame[sf]}, ack={c.rack[sf]}) crossed: neither FIN "
            "acknowledges the other, so each side sent its FIN before it had seen the peer's. "
            "Each received the other's FIN in FIN_WAIT_1 and moved to CLOSING, then to "
            "TIME_WAIT when its own FIN was acknowledged. Harmless: both ends keep a TIME_WAIT "
            "socket for 60 s instead of one. It usually means both sides time out idle "
            "connections at the same moment — the same condition that produces keepalive-race "
            "when a request is in flight."
        )
        causes = [
            "Equal idle timeouts on both sides (client idle timeout == server keep-alive "
            "timeout), or both applications closing on the same trigger."
        ]
        fixes = [
            "Usually none. Make the client's idle timeout clearly shorter than the server's so "
            f"the client always closes first; this also avoids keepalive-race. {knowledge.CLIENT_IDLE_KNOBS}."
        ]
        out.append(
            make_finding(
                diag,
                KIND,
                Severity.INFO,
                summary,
                inst,
                explanation,
                causes,
                fixes,
                knowledge.NONE_VISIBLE,
                {"server": server},
            )
        )
    return out
