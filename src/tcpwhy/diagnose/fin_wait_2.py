"""fin-wait-2-stall: a closed side waits for a peer FIN that comes late or never (P11, K6).

The telling case: the peer's late FIN (or data) answered by RST, because the
orphaned FIN_WAIT_2 socket expired after tcp_fin_timeout and the kernel no
longer knows the connection.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.tcp.state import State

KIND = "fin-wait-2-stall"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    if not cap.nstreams:
        return []
    none = np.iinfo(np.int64).max
    ff = cap.first_fin_ns
    limit = int(diag.settings.fin_wait_2_s * 1e9)
    groups: dict[tuple[int, str], list[Instance]] = defaultdict(list)
    for x in (CLIENT, SERVER):
        peer = 1 - x
        late = (ff[:, peer] - ff[:, x] > limit) | ((ff[:, peer] < none) & (cap.n_rst[:, x] > 0))
        m = (ff[:, x] < none) & (ff[:, x] < ff[:, peer]) & late
        for sid in np.flatnonzero(m):
            c = cap.conn(int(sid))
            if diag.is_claimed(c.sid, "close") or diag.is_claimed(c.sid):
                continue
            fw2 = c.entered(x, State.FIN_WAIT_2)
            if not fw2:
                continue
            xf = c.first_fin(x)
            pf = c.first_fin(peer)
            if xf is None or pf is None:
                continue
            rst = next((j for j in range(pf + 1, c.n) if c.side[j] == x and c.is_rst(j)), None)
            wait = c.dt(fw2[0], pf)
            if rst is None and wait < diag.settings.fin_wait_2_s:
                continue
            rows = [
                (xf, f"{WHO[x]} closes (FIN)"),
                (fw2[0], f"{WHO[peer]} ACKs it: {WHO[x]} waits in FIN_WAIT_2"),
                (pf, f"{WHO[peer]} closes {fmt_s(wait)} later"),
            ]
            if rst is not None:
                rows.append((rst, f"{WHO[x]} answers with RST: its FIN_WAIT_2 socket had expired"))
                diag.claim(c.sid)
            groups[(x, c.server)].append(
                Instance(c, rows, {"fin_wait_2_s": round(wait, 3), "reset": rst is not None})
            )
    out = []
    for (x, server), inst in groups.items():
        ex = min(inst, key=lambda i: (not i.facts["reset"], i.first_ns))
        c = ex.conn
        n = len(inst)
        resets = sum(1 for i in inst if i.facts["reset"])
        who, peer_name = WHO[x], WHO[1 - x]
        summary = (
            f"{plural(n, 'connection')} to {server}: the {who} closed and waited in FIN_WAIT_2 "
            f"for the {peer_name}'s FIN"
            + (f"; {resets} late FINs answered by RST (socket expired)" if resets else "")
        )
        wait = ex.facts["fin_wait_2_s"]
        explanation = (
            f"On stream {c.sid} ({c.client} → {c.server}) the {who} closed first; the {peer_name} "
            f"acknowledged the FIN, which put the {who} in FIN_WAIT_2 — waiting for the "
            f"{peer_name} to close too. The {peer_name} sent its FIN only {fmt_s(wait)} later: its "
            "application kept the connection in CLOSE_WAIT all that time."
        )
        if ex.facts["reset"]:
            explanation += (
                f" By then the {who}'s socket was gone: after close() an orphaned FIN_WAIT_2 "
                "socket lives only net.ipv4.tcp_fin_timeout seconds (60 by default) and then "
                f"disappears without sending anything, so the {peer_name}'s late FIN met no socket "
                f"and the {who}'s kernel answered with RST. The {peer_name}'s application gets "
                "'Connection reset by peer' or EPIPE if it writes."
            )
        else:
            explanation += (
                f" A {who} that used shutdown(SHUT_WR) keeps the socket and FIN_WAIT_2 has no "
                "timeout at all; an orphan (after close()) expires after tcp_fin_timeout."
            )
        causes = [
            f"The {peer_name} application does not close after reading end-of-file (a CLOSE_WAIT "
            "leak on the other end), or is blocked.",
            f"The {peer_name} vanished after acknowledging the FIN.",
            f"The {who} half-closes with shutdown(SHUT_WR) and never calls close().",
        ]
        fixes = [
            f"Fix the {peer_name}: close on EOF (see close-wait-leak); check `ss -tanp state "
            f"close-wait` on the {peer_name} host.",
            "net.ipv4.tcp_fin_timeout bounds orphaned FIN_WAIT_2 sockets only; TCP_LINGER2 per "
            "socket; after shutdown(SHUT_WR), read to EOF with a deadline and then close().",
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
                knowledge.RESET if resets else knowledge.NONE_VISIBLE,
                {"side": who, "server": server, "reset": resets},
            )
        )
    return out
