"""abortive-close: a connection ended by RST instead of FIN.

An application abort is sent as [R.] with the sender's next sequence
number, not as an answer to a segment. If the peer's last data was still
unanswered, the likely cause is close() with unread bytes (the early
4xx on an upload); if everything was answered, SO_LINGER {on, 0}.

Several connections of one server that it never answered, reset within
5 ms of one another, were closed by one event: the server process exiting
(or restarting) or its listening socket closing with them still in its
accept queue; the text then leads with that event.
"""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, FIN, SYN
from tcpwhy.diagnose import http, knowledge, tls
from tcpwhy.diagnose.common import Group, Hits, resets_before_fin
from tcpwhy.diagnose.context import SERVER, WHO, Conn
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.tcp.seq import HALF, next_seq, seq_diff, seq_geq

ORDER = 230

KIND = "abortive-close"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for c, r, x in resets_before_fin(diag):
        if not c.at("flags", r) & ACK or c.at("seq", r) != _next_seq(c, x, r):
            continue
        if tls.is_unread_close_notify_reset(c, r):
            continue  # close() with the peer's close_notify unread: the exchange had ended
        last_peer = c.last_data_before(r, 1 - x)
        last_own = c.last_data_before(r, x)
        if last_peer is None and last_own is None:
            continue  # no data exchanged: not a "close instead of FIN" of a used connection
        unread = last_peer is not None and (last_own is None or last_own < last_peer)
        rows = []
        if last_peer is not None:
            what = (
                http.describe_request(c, last_peer)
                if c.at("side", last_peer) == 0
                else f"{c.at('plen', last_peer)} bytes"
            )
            rows.append(
                (last_peer, f"{WHO[1 - x]} sends {what}" + (" — never answered" if unread else ""))
            )
        if last_own is not None and not unread:
            rows.append((last_own, f"{WHO[x]} sends its last data"))
        rows.append(
            (
                r,
                f"{WHO[x]} aborts: RST instead of FIN"
                + (" (closed with unread data)" if unread else " (SO_LINGER 0 or abort)"),
            )
        )
        # a server that never sent a byte: the ones reset at once tell a process exit or a
        # listener closed with them queued (`_at_once`)
        silent = x == SERVER and int(c.cap.bytes[c.sid, SERVER]) == 0
        hits.add(
            (c.server, x, "unread" if unread else "linger"),
            c,
            rows,
            {"rst_ns": int(c.ts[r]) if silent else None},
        )
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _next_seq(c: Conn, x: int, r: int) -> int | None:
    """`x`'s next sequence number before row r: a RST carrying it has nothing outstanding.

    The highest of `x`'s segment ends in sequence space, the first of equals; by numpy
    when those ends lie within half the sequence space of one another (then "higher in
    sequence space" is "higher once unwrapped"), else by the walk (`_next_seq_walk`)."""
    # the connection's kept columns (the rule's other questions read them too), the
    # sequence numbers of `x`'s rows only
    mine = np.flatnonzero(c._np_side[:r] == x)
    if not len(mine):
        return None
    seq = c.cap.table["seq"][c.rows[mine]].astype(np.int64)
    e = next_seq(seq, c._np_plen[mine], c._np_flags[mine] & (SYN | FIN))
    # unwrapped: each end as the previous one plus the signed step between them
    step = seq_diff(e[1:], e[:-1])
    u = np.empty(len(e), np.int64)
    u[0] = 0
    np.cumsum(step, out=u[1:])
    if int(u.max()) - int(u.min()) >= HALF:
        return _next_seq_walk(c, x, r)
    return int(e[int(np.argmax(u))])


def _next_seq_walk(c: Conn, x: int, r: int) -> int | None:
    """`_next_seq` one row at a time (ends spread over half the sequence space or more)."""
    nxt = None
    for i in range(r):
        if c.side[i] == x:
            e = next_seq(c.seq[i], c.plen[i], c.flags[i] & (SYN | FIN))
            nxt = e if nxt is None or seq_geq(e, nxt) else nxt
    return nxt


AT_ONCE_NS = 5_000_000
"""Resets of one server this close to one another (5 ms) came from one event: a process
exiting closes every socket it holds in a loop, and a listener closing resets every
connection still in its accept queue the same way (microseconds apart)."""


def _at_once(g: Group) -> int:
    """How many of the group's never-answered connections the server reset within
    `AT_ONCE_NS` of another of them."""
    ts = np.sort(np.array([t for t in g.values("rst_ns") if t is not None], np.int64))
    if len(ts) < 2:
        return 0
    near = np.diff(ts) <= AT_ONCE_NS
    both = np.zeros(len(ts), np.bool_)
    both[:-1] |= near
    both[1:] |= near
    return int(both.sum())


def _tell(g: Group) -> Story:
    server, x, cause = g.key
    c, n = g.c, g.n
    who, peer = WHO[x], WHO[1 - x]
    r = g.ex.rows[-1][0]
    if cause == "unread":
        together = _at_once(g)
        summary = (
            f"{plural(n, 'connection')} to {server} reset by the {who} while data from the "
            f"{peer} was still unread"
            + (
                ("; all at once" if together == n else f"; {together:,} of them at once")
                + ", never answered: the server process exited or closed its listening socket"
                if together
                else ""
            )
        )
        explanation = (
            f"On {c.label()} the {peer} sent data that the "
            f"{who}'s kernel acknowledged, but the {who} sent no answer and ended the "
            f"connection with a RST (frame {c.frame[r]}, [R.] with its own next sequence "
            "number: an abort by the application, not a reply to a segment). Linux does "
            "this when an application calls close() while received bytes are still unread "
            "in the socket (RFC 2525 §2.17; counter TcpExtTCPAbortOnClose): the data is "
            f"discarded and the {peer} gets 'Connection reset by peer' — even if the {who} "
            "meant a normal close, and even if a response was already on its way. The "
            "classic case: a server rejecting an upload early (413, 401) without reading "
            "the body."
        )
        causes = [
            f"The {who} closes without reading the whole request (early error response, "
            "request body ignored).",
            f"The {who} crashed or timed out mid-request and its socket was closed.",
        ]
        if together:
            explanation += (
                f" {plural(together, 'connection')} that the server never answered were reset "
                f"within {AT_ONCE_NS // 1_000_000} ms of one another: one event closed them "
                "all. A server process that exits (a crash, a restart, a stop that does not "
                "wait) closes every socket it holds, and a listening socket that closes resets "
                "every connection still waiting in its accept queue, which the application "
                "never accepted and whose requests it never saw."
            )
            causes.insert(
                0,
                "The server process exited or closed its listening socket (a crash, a "
                "restart or deploy, an abrupt stop) with these connections accepted but "
                "unread, or still queued and never accepted.",
            )
        fixes_first = (
            [
                "Find what stopped the server at that moment (its logs, restarts, deploys, the "
                "OOM killer); stop servers gracefully: stop listening, then serve what was "
                "already accepted (nginx -s quit, not -s stop), and have load balancers drain "
                "a node before it stops."
            ]
            if together
            else []
        )
        fixes = [
            *fixes_first,
            knowledge.advice(
                f"In the {who}: drain (read and discard) the rest of the request for a bounded "
                "time before closing — nginx lingering_close / lingering_time / "
                "lingering_timeout; send Connection: close with early responses; shut down "
                "the writing side first (shutdown(SHUT_WR)), then read until EOF.",
                knowledge.Fix(
                    "nginx",
                    "lingering_close",
                    None,
                    "nginx lingering_close / lingering_time / lingering_timeout",
                ),
                knowledge.Fix(
                    "any",
                    None,
                    None,
                    "send Connection: close with early responses; shut down the writing side first (shutdown(SHUT_WR)), then read until EOF",
                ),
            ),
            f"In the {peer}: use Expect: 100-continue for large uploads so the server can "
            "refuse before the body is sent.",
        ]
    else:
        summary = (
            f"{plural(n, 'connection')} to {server} ended by the {who} with RST instead of "
            "FIN after the exchange had completed"
        )
        explanation = (
            f"On {c.label()} every request had its answer; "
            f"then the {who} ended the connection with a RST (frame {c.frame[r]}, [R.] "
            "with its own next sequence number, not in reply to anything) instead of the "
            "FIN exchange. That is an abortive close: the application set SO_LINGER {on, "
            "0} before close() (counted as TcpExtTCPAbortOnData), or aborted the "
            f"connection on a timeout. No TIME_WAIT is left behind, but the {peer} sees "
            "'Connection reset by peer' and anything still in flight is lost."
        )
        causes = [
            f"The {who} (or a proxy in its place) enables SO_LINGER 0 to avoid TIME_WAIT "
            "(HAProxy option nolinger, nginx reset_timedout_connection, some frameworks).",
            f"The {who} aborts connections on its own timeout.",
        ]
        fixes = [
            "Prefer connection reuse over linger-0 to keep TIME_WAIT down; reserve "
            "abortive close for misbehaving peers.",
            f"Make the {peer} tolerate a reset after a complete response (do not treat it "
            "as a failed request).",
        ]
    facts = {"server": server, "side": who, "cause": cause}
    errors = knowledge.RESET
    return Story(Severity.WARNING, summary, explanation, causes, fixes, errors, facts)
