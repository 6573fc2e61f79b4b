"""close-wait-leak: an endpoint got the peer's FIN, acknowledged it, and never closed.

CLOSE_WAIT has no kernel timer: only the application's close() ends it, so
an endpoint that stays there until the capture ends (or for longer than the
threshold) is an application that forgot the socket.
"""

from __future__ import annotations

from tcpwhy.diagnose.closing import PROMPT_S
from tcpwhy.diagnose.common import Group, Hits, late_fin
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn, fmt_s
from tcpwhy.diagnose.knowledge import Fix, advice
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule
from tcpwhy.tcp.state import State

ORDER = 130

KIND = "close-wait-leak"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    limit_s = diag.settings.close_wait_s
    hits = Hits()
    for x in (SERVER, CLIENT):
        # the peer closed first and x closed late or never, without a reset
        m = late_fin(cap, 1 - x, limit_s)
        # (less connections an earlier rule explained: a path MTU black hole's stuck queue)
        for c in cap.conns_where(m & (cap.n_rst[:, x] == 0) & ~diag.claimed_mask(Claim.CLOSE)):
            got = _close_wait(c, x, cap.end_ns, limit_s)
            if got is None:
                continue
            rows, facts = got
            owner = c.server if x == SERVER else c.client_ip
            hits.add((x, owner), c, rows, facts)
            diag.claim(c.sid, Claim.CLOSE)
    return hits.findings(diag, KIND, _tell)


def _close_wait(
    c: Conn, x: int, end_ns: int, limit_s: float
) -> tuple[list[tuple[int, str]], dict[str, object]] | None:
    """The evidence that `x` sat in CLOSE_WAIT until the end or longer than limit_s."""
    entered = c.entered(x, State.CLOSE_WAIT)
    if not entered:
        return None
    k = entered[0]
    timeline = (c.states.originator if x == CLIENT else c.states.responder).timeline
    left = next((s for s in timeline if s.frame - 1 > k and s.state is not State.CLOSE_WAIT), None)
    until_end = c.final_state(x) is State.CLOSE_WAIT
    dur = ((end_ns if left is None else left.ts_ns) - c.ts[k]) / 1e9
    if not until_end and dur < limit_s:
        return None
    peer = 1 - x
    pf = c.first_fin(peer)
    ack = c.fin_acked_by(x, pf) if pf is not None else None
    if pf is None or ack is None:
        return None  # the capture never saw this side acknowledge the FIN
    if until_end and dur < limit_s:
        # a prompt close() would show up one round trip to x (handshake, else how long its
        # ACK of the FIN took) after the FIN passed the capture point, plus PROMPT_S
        rtt = c.rtt_to(x)
        if (end_ns - c.ts[pf]) / 1e9 < (rtt if rtt is not None else c.dt(pf, ack)) + PROMPT_S:
            return None  # the capture ended before a prompt close could have shown up in it
    rows = [
        (pf, f"{WHO[peer]} closes (FIN)"),
        (ack, f"{WHO[x]} kernel ACKs the FIN: {WHO[x]} socket in CLOSE_WAIT"),
    ]
    last = c.n - 1
    if until_end and last not in (pf, ack):
        rows.append(
            (
                last,
                f"last packet of the connection; no FIN from the {WHO[x]} until the capture ends",
            )
        )
    reset = False
    if not until_end and left is not None and left.frame:
        i = left.frame - 1
        # x sent no RST (the rule asks that): CLOSE_WAIT ends by x's FIN or the peer's RST
        reset = c.is_rst(i) and c.side[i] == peer
        if reset:
            wrote = c.last_data_before(i, x)
            if wrote is not None and wrote > ack:
                rows.append((wrote, f"{WHO[x]} still writes {c.plen[wrote]} bytes, not closing"))
            rows.append(
                (
                    i,
                    f"{WHO[peer]} ends the connection with RST, {fmt_s(dur)} into the "
                    f"{WHO[x]}'s CLOSE_WAIT: the {WHO[x]} never closed",
                )
            )
        else:
            rows.append((i, f"{WHO[x]} finally closes (FIN) after {fmt_s(dur)}"))
    facts: dict[str, object] = {
        "close_wait_s": round(dur, 3),
        "until_end": until_end,
        "reset_by_peer": reset,
    }
    return rows, facts


def _tell(g: Group) -> Story:
    (x, owner), ex, c, n = g.key, g.ex, g.c, g.n
    durs = g.values("close_wait_s")
    ends = g.count("until_end")
    resets = g.count("reset_by_peer")
    who, peer_name = WHO[x], WHO[1 - x]
    where = f"{who} {owner}"
    span = f"{fmt_s(min(durs))}" + (f" to {fmt_s(max(durs))} later" if n > 1 else " later")
    if resets == n:
        late = f"never did: the {peer_name} ended it with RST {span}"
    elif ends + resets == n:
        late = "never did"
    elif ends + resets == 0:
        late = f"closed only {span}"
    else:
        late = "closed late or never"
    notes = [f"{ends} still open when the capture ended"] if ends else []
    if resets and resets < n:
        notes.append(f"{resets} ended by the {peer_name}'s RST")
    summary = (
        f"{plural(n, 'connection')} left in CLOSE_WAIT by the {who} ({owner}): the {peer_name} "
        f"closed, the {who} {late}" + (f" ({'; '.join(notes)})" if notes else "")
    )
    stayed = fmt_s(ex.facts["close_wait_s"])
    if ex.facts["until_end"]:
        ending = f"It was still in CLOSE_WAIT {stayed} later, when the capture ended"
    elif ex.facts.get("reset_by_peer"):
        ending = (
            f"It was still in CLOSE_WAIT {stayed} later, when the {peer_name} ended the "
            f"connection with RST: the {who} never closed it"
        )
    else:
        ending = f"It stayed there {stayed} before closing (FIN)"
    explanation = (
        f"On {c.label()} the {peer_name} closed its side (FIN) and "
        f"the {who}'s kernel acknowledged it, moving the {who}'s socket to CLOSE_WAIT. From "
        f"then on only the {who} application can end the connection, by calling close(); "
        "CLOSE_WAIT has no timeout in the kernel. "
        + ending
        + f". Meanwhile the {peer_name}'s socket waits in FIN_WAIT_2 (for tcp_fin_timeout, 60 s, "
        "if it was orphaned; forever if it only shut down its writing side)."
    )
    if n > 1:
        explanation += (
            f"\n\nThe {where} did this on {plural(n, 'connection')} "
            f"(CLOSE_WAIT for {_span(durs)} as seen here). "
            "Each holds a file descriptor and memory: a growing count ends in 'Too many "
            "open files' or a starved connection pool."
        )
    causes = [
        f"The {who} application reads end-of-file (read() returns 0) and does not close the "
        "socket — often on an error path, or a response body that is never closed (Go "
        "resp.Body.Close(), OkHttp ResponseBody.close(), HttpClient EntityUtils.consume).",
        f"The {who}'s event loop does not watch idle sockets for readability, so it never "
        "sees the EOF; or its worker threads are blocked.",
    ]
    if x == CLIENT:
        causes.append(
            "A client connection pool holding connections the server closed (normal for a "
            "short while; see stale-keepalive-reuse for what happens when they are reused)."
        )
    fixes = [
        "Close the socket when read() returns 0 (EOF); always release response bodies and "
        "streams, also on error paths.",
        f"On the {who} host: `ss -tanp state close-wait` shows the owning process; its "
        "count growing over time (and the process's fd count with it) confirms the leak. "
        "There is no kernel knob for CLOSE_WAIT: only the application can fix it.",
        advice(
            "Pools: evict connections the server closed (validate or read idle sockets).",
            Fix("any", None, None, "Pools: evict connections the server closed."),
            Fix(
                "java-apache-httpclient",
                "setValidateAfterInactivity",
                None,
                "Apache HttpClient: setValidateAfterInactivity(…) and evictIdleConnections(…)",
            ),
            Fix(
                "python-aiohttp",
                "TCPConnector.enable_cleanup_closed",
                "True",
                "aiohttp: TCPConnector(enable_cleanup_closed=True)",
            ),
        ),
    ]
    errors = [
        f"{who} (eventually): 'Too many open files' (EMFILE), or pool exhaustion such as "
        "'Timeout waiting for connection from pool'",
        f"{peer_name}: usually nothing; its FIN_WAIT_2 socket expires silently",
    ]
    if resets:
        errors.append(
            f"{who}, on its next read or write after the {peer_name}'s RST: 'Connection reset "
            "by peer' (ECONNRESET) or 'Broken pipe' (EPIPE)"
        )
    facts = {"side": who, "endpoint": owner, "until_capture_end": ends, "reset_by_peer": resets}
    return Story(Severity.WARNING, summary, explanation, causes, fixes, errors, facts)


def _span(durs: list[float]) -> str:
    """How long, over several connections: one figure when they are all alike."""
    lo, hi = fmt_s(min(durs)), fmt_s(max(durs))
    return f"{lo} each" if lo == hi else f"{lo} to {hi}"
