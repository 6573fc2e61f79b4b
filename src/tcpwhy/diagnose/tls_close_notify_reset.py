"""tls-close-notify-reset: a RST sent because the peer's close_notify was never read. Info.

A TLS side that closes its socket right after reading a response leaves the
peer's close_notify (and its FIN) unread in the socket; Linux answers close()
with unread data by RST instead of FIN (RFC 2525 §2.17). On the wire that is
an abortive close, but every exchange had ended: the note says so, so that it
is not taken for one of the resets that lose data (abortive-close does not
report it).
"""

from __future__ import annotations

from tcpwhy.diagnose import knowledge, tls
from tcpwhy.diagnose.common import Group, Hits, first_resets
from tcpwhy.diagnose.context import WHO
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule

ORDER = 220

KIND = "tls-close-notify-reset"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    if not len(tls.capture_records(diag.cap)):
        return []
    hits = Hits()
    for c, r in first_resets(diag):
        if not tls.is_unread_close_notify_reset(c, r):
            continue
        x = c.side[r]
        tc = tls.of(c)
        assert tc is not None
        peer = tc.closing[1 - x]
        rows = [
            (peer.record.row, f"{WHO[1 - x]} sends {peer.text()}"),
            (r, f"{WHO[x]} closes with it unread: its kernel sends RST instead of FIN"),
        ]
        hits.add((c.server, x), c, rows)
        diag.claim(c.sid)
    return hits.findings(diag, KIND, _tell)


def _tell(g: Group) -> Story:
    server, x = g.key
    c, n = g.c, g.n
    who, peer = WHO[x], WHO[1 - x]
    alert, r = g.ex.rows[0][0], g.ex.rows[-1][0]
    summary = (
        f"{plural(n, 'TLS connection')} to {server} ended by the {who}'s RST after the "
        f"{peer}'s close_notify (harmless)"
    )
    explanation = (
        f"On {c.label()} the {peer} ended its side with a closing alert (frame "
        f"{c.frame[alert]}) and the {who} closed its socket without reading it: Linux "
        f"answers close() with unread bytes by RST instead of FIN (frame {c.frame[r]}). "
        "Every exchange had ended before, so nothing was lost; most HTTPS clients close this "
        "way after a 'Connection: close' response."
    )
    causes = [f"The {who} closes without reading the {peer}'s close_notify (usual, harmless)."]
    fixes = [
        f"None needed. To end with FIN instead, the {who} can read until end of file (or do "
        "a TLS shutdown that waits for the peer's alert) before close()."
    ]
    return Story(
        Severity.INFO, summary, explanation, causes, fixes, knowledge.NONE_VISIBLE,
        {"server": server, "side": who},
    )  # fmt: skip
