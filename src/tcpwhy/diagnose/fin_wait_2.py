"""fin-wait-2-stall: a closed side waits for a peer FIN that comes late or never.

The telling case: the peer's late FIN (or data) answered by RST, because the
orphaned FIN_WAIT_2 socket expired after tcp_fin_timeout and the kernel no
longer knows the connection.
"""

from __future__ import annotations

from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits, late_fin
from tcpwhy.diagnose.context import CLIENT, NO_FIN, SERVER, WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule
from tcpwhy.diagnose.resets import too_fast
from tcpwhy.tcp.state import State

ORDER = 140

KIND = "fin-wait-2-stall"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    limit_s = diag.settings.fin_wait_2_s
    hits = Hits()
    for x in (CLIENT, SERVER):
        peer = 1 - x
        # x closed first; the peer's FIN came late, or came and x reset
        f = cap.fins  # (only streams with a FIN)
        reset = f.per_stream(
            cap.nstreams,
            (f.ns[:, x] < f.ns[:, peer]) & (f.ns[:, peer] < NO_FIN) & (cap.n_rst[f.sids, x] > 0),
        )
        for c in cap.conns_where(late_fin(cap, x, limit_s) | reset):
            if diag.is_claimed(c.sid, Claim.CLOSE) or diag.is_claimed(c.sid):
                continue
            fw2 = c.entered(x, State.FIN_WAIT_2)
            xf = c.first_fin(x)
            pf = c.first_fin(peer)
            if not fw2 or xf is None or pf is None:
                continue
            rst = c.next_rst(x, pf)
            if rst is not None and c.fin_acked_by(x, pf, stop=rst) is not None:
                rst = None  # x acknowledged the late FIN: its socket was there; the RST is not the answer
            if rst is not None and too_fast(c, rst):
                rst = None  # too quick to be x's kernel: middlebox-reset tells it
            wait = c.dt(fw2[0], pf)
            if rst is None and wait < limit_s:
                continue
            rows = [
                (xf, f"{WHO[x]} closes (FIN)"),
                (fw2[0], f"{WHO[peer]} ACKs it: {WHO[x]} waits in FIN_WAIT_2"),
                (pf, f"{WHO[peer]} closes {fmt_s(wait)} later"),
            ]
            if rst is not None:
                rows.append((rst, f"{WHO[x]} answers with RST: its FIN_WAIT_2 socket had expired"))
                diag.claim(c.sid)
            facts = {"fin_wait_2_s": round(wait, 3), "reset": rst is not None}
            hits.add((x, c.server), c, rows, facts)
    # the text tells about a connection that was reset, if any
    return hits.findings(diag, KIND, _tell, lambda i: (not i.facts["reset"], i.first_ns))


def _tell(g: Group) -> Story:
    (x, server), ex, c, n = g.key, g.ex, g.c, g.n
    who, peer_name = WHO[x], WHO[1 - x]
    resets = g.count("reset")
    summary = (
        f"{plural(n, 'connection')} to {server}: the {who} closed and waited in FIN_WAIT_2 "
        f"for the {peer_name}'s FIN"
        + (f"; {plural(resets, 'late FIN')} answered by RST (socket expired)" if resets else "")
    )
    wait = ex.facts["fin_wait_2_s"]
    explanation = (
        f"On {c.label()} the {who} closed first; the {peer_name} "
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
        knowledge.advice(
            "net.ipv4.tcp_fin_timeout bounds orphaned FIN_WAIT_2 sockets only; TCP_LINGER2 per "
            "socket; after shutdown(SHUT_WR), read to EOF with a deadline and then close().",
            knowledge.sysctl(
                "net.ipv4.tcp_fin_timeout", None, "bounds orphaned FIN_WAIT_2 sockets only"
            ),
            knowledge.Fix(
                "any",
                "TCP_LINGER2",
                None,
                "TCP_LINGER2 per socket; after shutdown(SHUT_WR), read to EOF with a deadline and then close()",
            ),
        ),
    ]
    facts = {"side": who, "server": server, "reset": resets}
    errors = knowledge.RESET if resets else knowledge.NONE_VISIBLE
    return Story(Severity.WARNING, summary, explanation, causes, fixes, errors, facts)
