"""abortive-close: a connection ended by RST instead of FIN.

An application abort is sent as [R.] with the sender's next sequence
number, not as an answer to a segment. If the peer's last data was still
unanswered, the likely cause is close() with unread bytes (the early
4xx on an upload); if everything was answered, SO_LINGER {on, 0}.
"""

from __future__ import annotations

import numpy as np

from tcpwhy.decode.table import ACK, FIN, SYN
from tcpwhy.diagnose import http, knowledge, tls
from tcpwhy.diagnose.common import Group, Hits, resets_before_fin
from tcpwhy.diagnose.context import WHO, Conn
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
        hits.add((c.server, x, "unread" if unread else "linger"), c, rows)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _next_seq(c: Conn, x: int, r: int) -> int | None:
    """`x`'s next sequence number before row r: a RST carrying it has nothing outstanding.

    The highest of `x`'s segment ends in sequence space, the first of equals; by numpy
    when those ends lie within half the sequence space of one another (then "higher in
    sequence space" is "higher once unwrapped"), else by the walk (`_next_seq_walk`)."""
    rows = c.rows[:r]
    t = c.cap.table
    mine = np.flatnonzero(c.cap.side[rows] == x)
    if not len(mine):
        return None
    rows = rows[mine]
    plen = t["payload_len"][rows].astype(np.int64)
    e = next_seq(t["seq"][rows].astype(np.int64), plen, t["flags"][rows] & (SYN | FIN))
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


def _tell(g: Group) -> Story:
    server, x, cause = g.key
    c, n = g.c, g.n
    who, peer = WHO[x], WHO[1 - x]
    r = g.ex.rows[-1][0]
    if cause == "unread":
        summary = (
            f"{plural(n, 'connection')} to {server} reset by the {who} while data from the "
            f"{peer} was still unread"
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
        fixes = [
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
