"""simultaneous-close: both FINs crossed, both endpoints went through CLOSING. Info only."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tcpwhy.decode.table import ACK, FIN, RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import CLIENT, SERVER, Capture
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Diag, plural, rule
from tcpwhy.tcp.seq import seq_geq
from tcpwhy.tcp.state import State

ORDER = 150

KIND = "simultaneous-close"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    hits = Hits()
    for c in cap.conns_where(crossed_fins(cap)):
        if not c.entered(CLIENT, State.CLOSING) or not c.entered(SERVER, State.CLOSING):
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
        hits.add(c.server, c, rows)
    return hits.findings(diag, KIND, _tell)


def crossed_fins(cap: Capture) -> npt.NDArray[np.bool_]:
    """Per stream: both sides sent a FIN and neither first FIN acknowledges the other's.

    Without that no endpoint can pass through CLOSING (the state machine delivers a FIN
    after the last segment that does not acknowledge it), so it picks the few
    connections worth running the state machine on.
    """
    t = cap.table
    out = np.zeros(cap.nstreams, np.bool_)
    # the streams with a FIN (without RST) from each side, by the counts; the first FIN
    # of each side is looked for among theirs only (a flood's millions of streams with
    # none: no per-stream table of first rows)
    both = np.flatnonzero((cap.n_fin[:, CLIENT] > 0) & (cap.n_fin[:, SERVER] > 0))
    if not len(both):
        return out
    wanted = np.zeros(cap.nstreams, np.bool_)
    wanted[both] = True
    fins = np.flatnonzero((t["flags"] & (FIN | RST)) == FIN)
    fins = fins[wanted[cap.stream[fins]]]
    first = np.full((len(both), 2), len(t), np.int64)
    np.minimum.at(first, (np.searchsorted(both, cap.stream[fins]), cap.side[fins]), fins)
    flags = t["flags"][first].astype(np.int64)
    ack = t["ack"][first].astype(np.int64)
    end = t["seq"][first].astype(np.int64) + t["payload_len"][first] + ((flags & SYN) > 0) + 1

    def acks(a: int, b: int) -> npt.NDArray[np.bool_]:
        return ((flags[:, a] & ACK) > 0) & seq_geq(ack[:, a], end[:, b])

    out[both[~acks(0, 1) & ~acks(1, 0)]] = True
    return out


def _tell(g: Group) -> Story:
    server, ex, c, n = g.key, g.ex, g.c, g.n
    cf, sf = ex.rows[0][0], ex.rows[1][0]
    summary = f"{plural(n, 'connection')} to {server} closed by both sides at once (FINs crossed)"
    explanation = (
        f"On stream {c.no} the client's FIN (frame {c.frame[cf]}, ack={c.rack[cf]}) and the "
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
    lead = (
        "Usually none. Make the client's idle timeout clearly shorter than the server's so "
        "the client always closes first; this also avoids keepalive-race."
    )
    fixes = [knowledge.client_idle_advice(lead)]
    facts = {"server": server}
    errors = knowledge.NONE_VISIBLE
    return Story(Severity.INFO, summary, explanation, causes, fixes, errors, facts)
