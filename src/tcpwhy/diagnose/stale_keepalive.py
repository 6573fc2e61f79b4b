"""stale-keepalive-reuse: a pooled connection reused after the server had closed it.

Signature: the server's FIN after an idle gap, the client's kernel ACK, then
a request whose ACK field already covers that FIN, answered by the server's
RST. The server's idle timeout is measured across all connections the server
closed after idling, so the fix can name a number.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from tcpwhy.decode import http2
from tcpwhy.decode import tls as tls_rec
from tcpwhy.diagnose import http, knowledge, tls
from tcpwhy.diagnose.closing import AfterFin, after_fin, recommend_below, server_idle_timeout
from tcpwhy.diagnose.context import CLIENT, SERVER, Conn, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule
from tcpwhy.diagnose.resets import too_fast
from tcpwhy.tcp.state import State

ORDER = 60

KIND = "stale-keepalive-reuse"


def goaway_rows(c: Conn) -> frozenset[int]:
    """Local rows that carry only the server's HTTP/2 GOAWAY: its goodbye before the FIN
    (as a TLS close_notify is), not data, so an idle gap is measured up to it. Frames in
    clear on h2c; on ALPN h2 the short record before the server's closing alert."""
    return _only_frames(
        c, "h2_goaway_rows", lambda f: (f.ftype == http2.GOAWAY) & ~f.client, _tls_goaway
    )


def _only_frames(
    c: Conn,
    key: str,
    pick: Callable[[Any], np.ndarray],
    encrypted: Callable[[Conn], set[int]] | None = None,
) -> frozenset[int]:
    """Rows whose HTTP/2 frames are all ones `pick` selects (cached under `key`); on an
    encrypted h2 connection what `encrypted` reads instead, when given."""
    got: frozenset[int] | None = c.cache.get(key)
    if got is not None:
        return got
    rows: set[int] = set()
    hc = http.h2(c)
    if hc is not None and hc.frames is not None:
        f = hc.frames
        sel = pick(f)
        other = set(f.row[~sel].tolist())
        rows = {r for r in f.row[sel].tolist() if r not in other}
    elif hc is not None and encrypted is not None:
        rows = encrypted(c)
    got = c.cache[key] = frozenset(rows)
    return got


def _tls_goaway(c: Conn) -> set[int]:
    """On ALPN h2, the server's short record right before its closing alert, after its answer
    to the client's last data before the close: the GOAWAY of an idle close, encrypted (as
    `tls` reads it, but letting the client write after the close, as stale reuse does)."""
    tc = tls.of(c)
    close = tc.closing.get(SERVER) if tc is not None else None
    if tc is None or close is None:
        return set()
    before = [r for r in tc.records if r.row < close.record.row or r is close.record]
    i = next(k for k, r in enumerate(before) if r is close.record)
    prev = [r for r in before[:i] if r.side == SERVER]
    if not prev:
        return set()
    g = prev[-1]
    if g.ctype != tls_rec.APPLICATION_DATA or g.length > tls.H2_GOAWAY_MAX:
        return set()
    app = tls_rec.APPLICATION_DATA
    client = [r.row for r in before if r.side == CLIENT and r.ctype == app]
    if not client or client[-1] > g.row:
        return set()
    answered = any(
        r.side == SERVER and r.ctype == app and client[-1] < r.row < g.row for r in before
    )
    return {g.row} if answered else set()


def last_data_before(c: Conn, i: int, who: int | None = None) -> int | None:
    """The last data before row i, an HTTP/2 GOAWAY not counted (see `goaway_rows`)."""
    skip = goaway_rows(c)
    j = c.last_data_before(i, who)
    while j is not None and j in skip:
        j = c.last_data_before(j, who)
    return j


H2_NO_REQUEST = (http2.PRIORITY, http2.RST_STREAM, http2.SETTINGS, http2.PING, http2.WINDOW_UPDATE)
"""HTTP/2 frames that open no stream and carry no request: a client's RST_STREAM (for a
stream the server may have reset already), PING, WINDOW_UPDATE, SETTINGS or PRIORITY."""


def client_control_rows(c: Conn) -> frozenset[int]:
    """Local rows that carry only the client's HTTP/2 control frames (`H2_NO_REQUEST`), in
    clear on h2c. An HTTP/2 server's idle timer runs from its last stream's end: such a
    frame after it (nginx, reset by the server, sees the client cancel the same stream a
    moment later) starts no exchange, and measuring from it reads the timeout short."""
    return _only_frames(
        c, "h2_client_control_rows", lambda f: np.isin(f.ftype, H2_NO_REQUEST) & f.client
    )


def idle_start(c: Conn, i: int) -> int | None:
    """The last exchange before row i, where a server's idle timer starts: the last data,
    the server's GOAWAY and the client's HTTP/2 control frames not counted
    (`client_control_rows`)."""
    skip = client_control_rows(c)
    j = last_data_before(c, i)
    while j is not None and j in skip:
        j = last_data_before(c, j)
    return j


def idle_close(ev: AfterFin) -> bool:
    """The server's FIN followed an idle gap (an idle timeout), not its last reply; an
    HTTP/2 server's GOAWAY right before the FIN is part of its close, not a reply (nor is a
    client's HTTP/2 control frame a request: `idle_start`)."""
    c = ev.conn
    last = idle_start(c, ev.fin)
    return last is not None and c.dt(last, ev.fin) >= max(0.05, 5 * (c.rtt or 0.0))


def is_stale(ev: AfterFin) -> bool:
    # a RST too quick to be the server's is left to middlebox-reset
    return (
        ev.closer == SERVER
        and ev.covers
        and ev.reused
        and idle_close(ev)
        and not too_fast(ev.conn, ev.rst)
    )


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    groups: dict[str, list[AfterFin]] = defaultdict(list)
    for ev in after_fin(diag):
        if is_stale(ev):
            groups[ev.conn.server].append(ev)
            diag.claim(ev.conn.sid)
    return [_finding(diag, server, evs) for server, evs in groups.items()]


def _finding(diag: Diag, server: str, evs: list[AfterFin]) -> Finding:
    inst = []
    idles: list[float] = []
    after_fins: list[float] = []
    close_wait = 0
    for ev in evs:
        c = ev.conn
        rows = []
        reply = _last_reply(ev)
        if reply is not None:
            resp = http.last_response_before(c, ev.fin)
            what = f"response {resp.line}" if resp else f"last data, {c.plen[reply]} bytes"
            rows.append((reply, f"{what}; then the connection sits idle in the pool"))
        bye = _goaway(ev)
        if bye is not None:
            rows.append((bye[0], f"server says goodbye: {bye[1]}"))
        rows.append((ev.fin, "server closes the idle connection (FIN)"))
        ack = next(
            (
                j
                for j in range(ev.fin + 1, ev.data + 1)
                if c.side[j] == CLIENT and c.acks(j, c.fin_end(ev.fin))
            ),
            None,
        )
        if ack is not None and ack != ev.data:
            rows.append((ack, "client kernel ACKs the FIN; the pool does not notice"))
        rows.append((ev.data, f"client reuses the connection: {http.describe_request(c, ev.data)}"))
        rows.append((ev.rst, "server kernel answers with RST: the request is lost"))
        if c.state_after(CLIENT, ev.rst - 1) is State.CLOSE_WAIT:
            close_wait += 1
        last = last_data_before(c, ev.data)
        idle = c.dt(last, ev.data) if last is not None else None
        if idle is not None:
            idles.append(idle)
        after_fins.append(c.dt(ev.fin, ev.data))
        inst.append(
            Instance(
                c,
                rows,
                {"idle_before_reuse_s": idle, "request": http.describe_request(c, ev.data)},
            )
        )
    ex = min(evs, key=lambda e: e.conn.ts[e.fin])
    c = ex.conn
    st = server_idle_timeout(diag, server)
    n = len(evs)
    req = http.describe_request(c, ex.data)
    facts: dict[str, object] = {
        "server": server,
        "requests_lost": n,
        "client_idle_before_reuse_s": _stats(idles),
        "reuse_after_server_fin_s": _stats(after_fins),
    }
    if st is not None:
        facts["server_idle_timeout_s"] = {
            "min": round(st.min_s, 3),
            "median": round(st.median_s, 3),
            "max": round(st.max_s, 3),
            "n": st.n,
        }
    if st is not None and st.announced is not None:
        facts["keep_alive_header_timeout_s"] = st.announced

    if n == 1:
        summary = (
            f"{req} was sent on a pooled connection to {server} "
            f"{fmt_s(c.dt(ex.fin, ex.data))} after the server had closed it; the server reset it"
        )
    else:
        summary = (
            f"{n} requests to {server} were sent on pooled connections the server had already "
            f"closed; the server reset each one"
        )
    if st is not None:
        summary += f" (server idle timeout ≈ {st.median_s:.2f} s)"

    # the story of the example connection
    resp = http.last_response_before(c, ex.fin)
    parts = [
        f"Stream {c.no} ({c.client} → {c.server}) is a keep-alive connection the client keeps "
        "in a pool."
    ]
    ex_reply = _last_reply(ex)
    if ex_reply is not None:
        ctl = sorted(j for j in client_control_rows(c) if ex_reply < j < ex.fin)
        parts.append(
            f"Its last exchange ended at {c.s(ex_reply):.3f} s "
            + (f"with the response {resp.line} " if resp else "")
            + f"(frame {c.frame[ex_reply]}); then "
            + (
                f"no stream was opened for {fmt_s(c.dt(ex_reply, ex.fin))}: the client's "
                f"{_control_text(c, ctl)} opens none and asks for nothing, so the server's "
                "idle time counts from the last exchange."
                if ctl
                else f"nothing was sent for {fmt_s(c.dt(ex_reply, ex.fin))}."
            )
        )
    ex_bye = _goaway(ex)
    parts.append(
        f"At {c.s(ex.fin):.3f} s the server closed the connection "
        + (
            f"with an HTTP/2 goodbye, {ex_bye[1]} (frame {c.frame[ex_bye[0]]}), then FIN "
            f"(frame {c.frame[ex.fin]}): "
            if ex_bye is not None
            else f"(frame {c.frame[ex.fin]}, FIN): "
        )
        + "it had been idle for longer than the server's idle timeout, so the server moved to "
        "FIN_WAIT_1 and, once acknowledged, FIN_WAIT_2."
    )
    parts.append(
        "The client's kernel acknowledged the FIN at once and its socket moved to CLOSE_WAIT — "
        "but the application did not notice: an idle pooled socket is not being read, so "
        "nobody saw the end-of-file."
    )
    parts.append(
        f"{fmt_s(c.dt(ex.fin, ex.data))} later the pool handed the connection out again and the "
        f"client sent {req} (frame {c.frame[ex.data]}). Its acknowledgment number covers the "
        "server's FIN, so this is not a race: the client had been told the connection was "
        "closing before it wrote."
    )
    parts.append(
        f"The server's socket no longer existed for reading, so its kernel answered with RST "
        f"(frame {c.frame[ex.rst]}, {fmt_s(c.dt(ex.data, ex.rst))} later) and the request was "
        "never seen by the server application."
    )
    parts.append(
        "Because the client socket was in CLOSE_WAIT, the application reads end-of-file before "
        "any response (an EOF / 'server closed connection' error) or gets 'Broken pipe' on a "
        "further write — not 'Connection reset by peer'."
    )
    explanation = " ".join(parts)
    if n > 1:
        explanation += (
            f"\n\nThe same happened on {plural(n, 'connection')} to {server}"
            + (
                f"; the client had left them idle for {_range(idles)} before reusing them"
                if idles
                else ""
            )
            + "."
        )
    if st is not None:
        explanation += (
            f"\n\nMeasured across the connections the server closed after idling, {st.text()}."
        )
        if st.announced is not None:
            explanation += f" The server announces Keep-Alive: timeout={st.announced}."
    causes = []
    t = st.median_s if st is not None else None
    if t is not None:
        causes.append(
            f"The client's pool keeps idle connections longer than the server's idle timeout "
            f"({t:.2f} s): here it reused one after {_range(idles)} idle."
        )
    else:
        causes.append(
            "The client's pool keeps idle connections longer than the server's idle timeout."
        )
    causes.append(
        "The client does not check an idle connection before reusing it (a read would have "
        "shown the end-of-file)."
    )
    fins = sorted(e.conn.ts[e.fin] for e in evs)
    if len(fins) >= 3 and (fins[-1] - fins[0]) < 200_000_000:
        causes.insert(
            0,
            f"{len(fins)} connections were closed by the server within "
            f"{fmt_s((fins[-1] - fins[0]) / 1e9)}: a server restart, reload or graceful "
            "shutdown closing all idle connections at once.",
        )
    else:
        causes.append(
            "A server restart, reload or graceful shutdown closing idle connections "
            "(less likely when the FINs are spread out, as here)."
        )
    below = recommend_below(t) if t is not None else "the server's idle timeout"
    lead = "Make the client's idle timeout shorter than the server's" + (
        f" {t:.2f} s: at most {below}" if t is not None else ""
    )
    value = knowledge.seconds(below) if t is not None else None
    fixes = [
        knowledge.client_idle_advice(lead, value),
        knowledge.retry_advice("when a reused connection fails"),
        knowledge.advice(
            f"Or lengthen the server's idle timeout beyond the client's: {knowledge.SERVER_IDLE_KNOBS}; "
            "honour Keep-Alive: timeout= in the client where the library supports it.",
            *knowledge.SERVER_IDLE,
        ),
    ]
    errors = knowledge.EOF_ON_REUSE + (knowledge.BROKEN_PIPE if close_wait else [])
    story = Story(Severity.ERROR, summary, explanation, causes, fixes, errors, facts)
    return make_finding(diag, KIND, inst, story)


def _control_text(c: Conn, rows: list[int]) -> str:
    """The client's HTTP/2 control frames in `rows`: ``RST_STREAM on stream 7 at 0.802 s
    (frame 41)``."""
    hc = http.h2(c)
    f = hc.frames if hc is not None else None
    said = []
    for r in rows:
        names = []
        if f is not None:
            for k in np.flatnonzero((f.row == r) & f.client):
                name = http2.TYPE_NAMES.get(int(f.ftype[k]), str(int(f.ftype[k])))
                names.append(f"{name} on stream {int(f.sid[k])}" if f.sid[k] else name)
        said.append(f"{', '.join(names) or 'control frame'} at {c.s(r):.3f} s (frame {c.frame[r]})")
    return ", ".join(said)


def _last_reply(ev: AfterFin) -> int | None:
    """The server's last data before its FIN, its HTTP/2 GOAWAY not counted."""
    if ev.last_reply is None or ev.last_reply not in goaway_rows(ev.conn):
        return ev.last_reply
    return last_data_before(ev.conn, ev.fin, SERVER)


def _goaway(ev: AfterFin) -> tuple[int, str] | None:
    """The server's HTTP/2 GOAWAY before its FIN (its row, what it says), if it sent one."""
    c = ev.conn
    rows = sorted(j for j in goaway_rows(c) if j < ev.fin)
    if not rows:
        return None
    hc = http.h2(c)
    g = hc.goaway() if hc is not None else None
    if g is None:
        return rows[-1], "an encrypted record the size of an HTTP/2 GOAWAY (ALPN h2)"
    err = http2.ERROR_NAMES.get(g[2], str(g[2]))
    says = f"GOAWAY, last stream id {g[1]}, {err}: no stream above {g[1]} will be processed"
    return g[0], says


def _stats(v: list[float]) -> dict[str, float] | None:
    if not v:
        return None
    return {
        "min": round(min(v), 3),
        "median": round(statistics.median(v), 3),
        "max": round(max(v), 3),
        "n": len(v),
    }


def _range(v: list[float]) -> str:
    if not v:
        return "an unknown time"
    lo, hi = min(v), max(v)
    return fmt_s(lo) if hi - lo < 0.01 else f"{fmt_s(lo)} to {fmt_s(hi)}"
