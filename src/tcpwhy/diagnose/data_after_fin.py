"""data-after-fin: data written after the writer had received the peer's FIN, answered by RST.

The general form of stale reuse: any side (a server writing a late response
after the client gave up and closed, a protocol without pooling) that keeps
writing in CLOSE_WAIT. The peer's socket is closed for reading, so the data
draws a RST and the writer's next call fails with EPIPE.
"""

from __future__ import annotations

from tcpwhy.decode import http2
from tcpwhy.diagnose import http, knowledge
from tcpwhy.diagnose.closing import PROMPT_S, AfterFin, after_fin
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, WHO, fmt_s
from tcpwhy.diagnose.keepalive_race import is_race
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.diagnose.resets import too_fast
from tcpwhy.diagnose.stale_keepalive import is_stale
from tcpwhy.tcp.seq import seq_add

ORDER = 80

KIND = "data-after-fin"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for ev in after_fin(diag):
        if is_stale(ev) or is_race(ev) or diag.is_claimed(ev.conn.sid):
            continue
        if too_fast(ev.conn, ev.rst):
            continue  # not the closer's kernel: middlebox-reset tells it
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
        bye = goodbye(ev)
        if bye == "closes":
            wf = c.first_fin(1 - ev.closer)
            assert wf is not None
            rows.append((wf, f"{w} closes right after writing: its last words"))
        facts = {"covers": ev.covers, "fin": ev.fin, "data": ev.data, "rst": ev.rst, "bye": bye}
        hc = http.h2(c)
        # a new stream (encrypted on ALPN h2: a request, likely) on a connection the server ended
        h2_request = hc is not None and (hc.frames is None or _opens_stream(hc, ev.data))
        if h2_request and ev.closer != CLIENT and bye is None:
            facts["h2_request"] = True
        hits.add((c.server, ev.closer, bye is not None), c, rows, facts)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def goodbye(ev: AfterFin) -> str | None:
    """Whether the data after the FIN is the end of an orderly exchange rather than a write
    into a connection the writer failed to notice was closed:

    * "closes": the writer answered the FIN at once (within its round trip from the
      capture point plus PROMPT_S) with the data and its own FIN right behind it (a
      closing message such as a TLS close_notify, then close());
    * "unawaited": the closer sent its FIN right behind its last message, without waiting
      for the answer, and the data is that answer (a reply to QUIT or logout).

    None otherwise (a late answer after the closer gave up, or a write into a connection
    the writer never noticed was closed). On HTTP/2 a client's new stream is a request, not
    an answer, and a server's GOAWAY awaits none: a stream opened after the server's
    GOAWAY and FIN was sent on a closed connection (above the last stream id: never
    processed, safe to retry).
    """
    c, f, d = ev.conn, ev.fin, ev.data
    closer, writer = ev.closer, 1 - ev.closer
    hc = http.h2(c)
    if hc is not None and writer == CLIENT and _opens_stream(hc, d):
        return None
    wf = c.first_fin(writer)
    if wf is not None and wf > d and ev.covers:
        later_data = any(
            c.side[j] == writer and c.plen[j] > 0 and not c.is_rst(j) for j in range(d + 1, wf)
        )
        rtt = c.rtt_to(writer)
        prompt = rtt is not None and c.dt(f, d) <= rtt + PROMPT_S
        if prompt and not later_data:
            return "closes"
    last_c = c.last_data_before(f, closer)
    last_w = c.last_data_before(f, writer)
    if last_c is None or (last_w is not None and last_w > last_c):
        return None  # nothing the closer sent was waiting for an answer
    if hc is not None and closer != CLIENT:
        return None  # an HTTP/2 server's last frames (its GOAWAY) await no answer
    same_flight = all(c.side[j] == closer for j in range(last_c, f + 1))
    end = seq_add(c.seq[last_c], c.plen[last_c])
    if same_flight and c.acks(d, end):
        return "unawaited"
    return None


def _opens_stream(hc: http.H2Conn, i: int) -> bool:
    """Row i carries the client's HEADERS for a stream: a new request. False when the
    frames are encrypted (ALPN h2): there a prompt GOAWAY and FIN is still told by timing."""
    f = hc.frames
    if f is None:
        return False
    at = (f.row == i) & f.client & (f.ftype == http2.HEADERS) & (f.sid > 0)
    return bool(at.any())


def _tell(g: Group) -> Story:
    (server, closer, bye), ex, c, n = g.key, g.ex, g.c, g.n
    if bye:
        return _tell_goodbye(g)
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
        knowledge.advice(
            "Align timeouts end to end (client timeout > proxy timeout > server processing "
            "budget) or propagate deadlines so the late side stops working; nginx "
            "proxy_ignore_client_abort decides whether upstream work continues.",
            knowledge.Fix(
                "any",
                None,
                None,
                "Align timeouts end to end (client timeout > "
                "proxy timeout > server processing budget) or propagate deadlines.",
            ),
            knowledge.Fix(
                "nginx",
                "proxy_ignore_client_abort",
                None,
                "nginx: proxy_ignore_client_abort (off, the default: the upstream "
                "request is closed when the client goes)",
            ),
            knowledge.Fix(
                "nginx",
                "proxy_read_timeout",
                None,
                "nginx: proxy_read_timeout below the client's timeout",
            ),
        ),
    ]
    if ex.facts.get("h2_request"):
        causes, fixes = _h2_request_advice()
    facts = {"server": server, "closer": closer_name}
    errors = knowledge.BROKEN_PIPE + knowledge.RESET
    return Story(Severity.WARNING, summary, explanation, causes, fixes, errors, facts)


def _h2_request_advice() -> tuple[list[str], list[str]]:
    """A new HTTP/2 stream on a connection the server had ended: the client pool's fault,
    not a late answer, and the request is safe to retry (the server never took it)."""
    causes = [
        "The client's HTTP/2 connection pool does not honour the server's GOAWAY or its FIN: "
        "it kept the closed connection and opened a new stream on it.",
        "The server ended the connection on its own terms (GOAWAY: an idle timeout, a limit "
        "on streams or requests per connection, a reload), which it announced.",
    ]
    fixes = [
        "In the client: drop a pooled HTTP/2 connection as soon as it receives GOAWAY or "
        "end-of-file, and open a new one; streams above the GOAWAY's last stream id were "
        "never processed and can be sent again on the new connection.",
        knowledge.retry_advice("when a reused connection fails"),
    ]
    return causes, fixes


def _tell_goodbye(g: Group) -> Story:
    (server, closer, _), ex, c, n = g.key, g.ex, g.c, g.n
    fin_i, data_i, rst_i = ex.facts["fin"], ex.facts["data"], ex.facts["rst"]
    closer_name, writer = WHO[closer], WHO[1 - closer]
    size = f"{c.plen[data_i]} bytes"
    summary = (
        f"the {writer}'s last {size} after the {closer_name} had closed "
        f"({plural(n, 'connection')} to {server}) drew a RST: the end of an orderly exchange"
    )
    if ex.facts["bye"] == "closes":
        how = (
            f"Nothing the {closer_name} had sent was still unanswered; the {writer} answered "
            f"the FIN at once with {size} (frame {c.frame[data_i]}) and its own FIN: a "
            "closing message, such as a TLS close_notify alert, followed by close()."
        )
        causes = [
            f"The {closer_name} calls close() without waiting for the {writer}'s closing "
            "message (for TLS: it does not wait for the peer's close_notify, which TLS allows).",
        ]
    else:
        how = (
            f"The {closer_name} sent its last message and its FIN together, without waiting "
            f"for the answer; the {writer}'s {size} (frame {c.frame[data_i]}) are that "
            "answer (for example the reply to QUIT or a logout)."
        )
        causes = [
            f"The {closer_name}'s protocol ends with a message it does not need an answer "
            "to, and it closes right after sending it.",
        ]
    explanation = (
        f"On {c.label()} the {closer_name} closed the connection (frame {c.frame[fin_i]}, "
        f"FIN) with close(), so its socket no longer accepts data. {how} The "
        f"{closer_name}'s kernel answered with RST (frame {c.frame[rst_i]}) and those bytes "
        f"were dropped; nothing else was pending, so neither application lost anything it "
        f"was waiting for. Harmless; the {writer} may log a reset or a broken pipe if it "
        "touches the socket again."
    )
    fixes = [
        f"Usually none. To end without a reset, the {closer_name} can shut down its writing "
        f"side (shutdown(SHUT_WR)) and read until the {writer}'s EOF before close().",
    ]
    facts = {"server": server, "closer": closer_name}
    errors = knowledge.BROKEN_PIPE + knowledge.RESET
    return Story(Severity.INFO, summary, explanation, causes, fixes, errors, facts)
