"""tls-truncation: a TLS connection closed by a FIN without a close_notify before it.

TLS marks the end of a side's data with the close_notify alert (RFC 8446 §6.1,
RFC 5246 §7.2.1); a FIN alone says only that TCP ended, so the receiver
cannot tell a complete message from one cut short (a truncation attack looks
the same). The check is on the side that closes first: its last record before
its FIN is not an alert (TLS 1.2: content type 21; TLS 1.3: a short
application-data record, "likely" close_notify), and the peer had sent neither
close_notify nor FIN before it (a side answering the peer's close_notify with
a bare FIN is what most stacks do, and harmless).

Two cases by what the FIN followed: the closer's own data a moment before
(a response that may have been cut: warning), or an idle connection or the
peer's data (nothing of the closer's is in doubt, but a client's TLS stack that
insists on close_notify, OpenSSL 3 among them, reports an unexpected EOF: info,
for a server's close only; a client that closes after its answers without the
alert is what servers see all day).
"""

from __future__ import annotations

from tcpwhy.decode.table import RST
from tcpwhy.diagnose import tls
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, SERVER, WHO, Conn, fmt_s
from tcpwhy.diagnose.knowledge import Fix, advice
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule

ORDER = 250

KIND = "tls-truncation"
ERRORS = [
    "Python (ssl, OpenSSL 3): ssl.SSLEOFError: EOF occurred in violation of protocol "
    "(or, with suppress_ragged_eofs, an empty read: http.client.IncompleteRead / "
    "RemoteDisconnected)",
    "OpenSSL 3 / curl: error:0A000126:SSL routines::unexpected eof while reading "
    "(curl: (56) OpenSSL SSL_read: … unexpected eof while reading)",
    "Go: unexpected EOF (a record cut short), else a plain EOF",
    "Java: javax.net.ssl.SSLException: closing inbound before receiving peer's close_notify",
    "nginx: peer closed connection in SSL handshake / SSL_read() failed … unexpected eof "
    "while reading (with OpenSSL 3)",
]
"""What a TLS stack logs when the peer's FIN comes without close_notify."""
RIGHT_AFTER_S = 0.5
"""A FIN this soon after the closer's last data ends that data's turn: the data may be cut;
later, the connection was idle and closed on a timeout."""


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    hits = Hits()
    # the TLS connections closed by a FIN
    for c, tc in tls.conns_with(cap, lambda recs: cap.n_fin[recs.group // 2].sum(1) > 0):
        if not tc.messages or tc.fatal:
            continue
        got = _truncated(c, tc)
        if got is None:
            continue
        x, f, last_own, cut = got
        rows = []
        if last_own is not None:
            rows.append((last_own, f"{WHO[x]} sends its last application data"))
        rows.append((f, f"{WHO[x]} closes (FIN) with no close_notify before it"))
        gap = c.dt(last_own, f) if last_own is not None else None
        hits.add((c.server, x, cut), c, rows, {"gap": gap, "version": tc.version_text})
    return hits.findings(diag, KIND, _tell)


def _truncated(c: Conn, tc: tls.TLSConn) -> tuple[int, int, int | None, bool] | None:
    """(closer, its FIN, its last data, whether that data may be cut) when the side that
    closed first sent no closing alert."""
    fins = [(f, x) for x in (CLIENT, SERVER) if (f := c.first_fin(x)) is not None]
    if not fins:
        return None
    f, x = min(fins)
    if x in tc.closing:
        return None
    peer = 1 - x
    pc = tc.closing.get(peer)
    if pc is not None and pc.record.row < f:
        return None  # answering the peer's close_notify with a FIN
    pr = c.first_rst(peer)
    if pr is not None and pr < f:
        return None
    last_own = c.last_data_before(f, x)
    last_peer = c.last_data_before(f, peer)
    if last_own is not None and c.flags[last_own] & RST:
        last_own = None
    if last_own is not None and not any(r.side == x and r.row == last_own for r in tc.records):
        return None  # its last bytes are not TLS records (the protocol left TLS): no verdict
    cut = (
        last_own is not None
        and (last_peer is None or last_peer < last_own)
        and c.dt(last_own, f) < RIGHT_AFTER_S
    )
    if not cut and x == CLIENT:
        return None  # a client closing after its answers: a server's TLS stack expects that
    return x, f, last_own, cut


def _tell(g: Group) -> Story:
    server, x, cut = g.key
    c, n = g.c, g.n
    who, peer = WHO[x], WHO[1 - x]
    f = g.ex.rows[-1][0]
    gap = g.facts["gap"]
    after = f" {fmt_s(gap)} after its last data" if gap is not None else ""
    if cut:
        summary = (
            f"{plural(n, 'TLS connection')} to {server} closed by the {who} right after its "
            "data, without close_notify: the data may have been cut short"
        )
        explanation = (
            f"On {c.label()} the {who} sent its FIN (frame {c.frame[f]}){after} with no "
            f"close_notify alert before it. In TLS only close_notify says that a side's data "
            f"is complete; a bare FIN could as well be a connection cut in the middle of a "
            f"message, and the {peer} cannot tell the two apart unless the application "
            "protocol frames its messages (HTTP's Content-Length or chunked encoding). A "
            f"{peer} that reads until end of file (an HTTP/1.0-style close-delimited body) may "
            f"take a truncated message for a whole one; a strict TLS stack on the {peer} "
            "reports an unexpected EOF instead."
        )
        causes = [
            f"The {who}'s application closes the socket without shutting TLS down first "
            "(close() instead of SSL_shutdown / unwrap / tls.Conn.Close).",
            f"The {who} crashed or was killed mid-response (its kernel still sends the FIN).",
            f"A proxy or load balancer in front of the {who} ended the connection on its own "
            "timeout.",
        ]
    else:
        summary = (
            f"{plural(n, 'TLS connection')} to {server} closed by the {who} without "
            "close_notify (nothing cut: the connection was idle)"
        )
        explanation = (
            f"On {c.label()} the {who} ended the connection with a bare FIN (frame "
            f"{c.frame[f]}){after}, without the close_notify alert TLS expects first. "
            f"Its data had all been answered, so nothing is in doubt; but the {peer}'s TLS "
            "stack may treat the missing alert as an error: OpenSSL 3 (and so Python, curl, "
            "nginx built on it) reports 'unexpected eof while reading' unless told to "
            "ignore it."
        )
        causes = [
            f"The {who} closes idle connections with close() instead of a TLS shutdown.",
            f"A proxy or load balancer in front of the {who} closes idle connections itself.",
        ]
    fixes = [
        advice(
            f"In the {who}: shut TLS down before closing — OpenSSL SSL_shutdown() before close(); "
            "Python SSLSocket.unwrap() (or asyncio's transport.close(), which sends it); Go "
            "tls.Conn.Close() (not the underlying net.Conn's); Java SSLSocket.close() / "
            "SSLEngine.closeOutbound(); Node.js tlsSocket.end() rather than destroy(); nginx "
            "sends it itself, except on connections it drops after a timeout or an error.",
            Fix("any", None, None, f"In the {who}: OpenSSL SSL_shutdown() before close()"),
            Fix(
                "python",
                None,
                None,
                "Python: SSLSocket.unwrap() (or asyncio's transport.close(), which sends it)",
            ),
            Fix("go", None, None, "Go: tls.Conn.Close() (not the underlying net.Conn's)"),
            Fix("java", None, None, "Java: SSLSocket.close() / SSLEngine.closeOutbound()"),
            Fix("node", None, None, "Node.js: tlsSocket.end() rather than destroy()"),
            Fix(
                "nginx",
                None,
                None,
                "nginx sends it itself, except on connections it drops after a timeout or an error",
            ),
        ),
        advice(
            f"In the {peer}: rely on message framing, not end of file, to know a response is "
            "complete (Content-Length / chunked); OpenSSL 3 SSL_OP_IGNORE_UNEXPECTED_EOF "
            "accepts a bare FIN only where framing makes truncation visible.",
            Fix(
                "any",
                None,
                None,
                f"In the {peer}: rely on message framing (Content-Length / "
                "chunked), not end of file, to know a response is complete",
            ),
            Fix(
                "python",
                "ssl.OP_IGNORE_UNEXPECTED_EOF",
                None,
                "Python 3.10+: SSLContext.options |= ssl.OP_IGNORE_UNEXPECTED_EOF (OpenSSL 3's "
                "SSL_OP_IGNORE_UNEXPECTED_EOF), only where framing makes truncation visible",
            ),
        ),
    ]
    facts = {"server": server, "side": who, "cut": cut, "version": g.facts["version"]}
    severity = Severity.WARNING if cut else Severity.INFO
    return Story(severity, summary, explanation, causes, fixes, ERRORS, facts)
