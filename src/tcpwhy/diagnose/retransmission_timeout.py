"""retransmission-timeout: the same data sent again and again with doubling gaps, unacknowledged."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

from tcpwhy.decode.table import RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import WHO, Conn, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule
from tcpwhy.tcp.seq import seq_add

ORDER = 190

KIND = "retransmission-timeout"
MIN_SENDS = 3
# what Wireshark calls a segment sent again at a sequence number already sent (a 0/1-byte
# one just below the next sequence number is a keep-alive, not a retransmission)
RESENT = ("retransmission", "out_of_order", "keep_alive", "zero_window_probe")


def candidate_streams(diag: Diag) -> list[int]:
    """Streams in which one side sent data again at least MIN_SENDS - 1 times."""
    cap = diag.cap
    t = cap.table
    if not len(t):
        return []
    again = np.logical_or.reduce([cap.flag(k) for k in RESENT])
    again &= (t["payload_len"] > 0) & ((t["flags"] & (SYN | RST)) == 0)
    if not again.any():
        return []
    key = cap.stream[again] * 2 + cap.side[again]
    per_side = np.bincount(key, minlength=2 * cap.nstreams).reshape(-1, 2)
    return [int(s) for s in np.flatnonzero(per_side.max(1) >= MIN_SENDS - 1)]


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    hits = Hits()
    for sid in candidate_streams(diag):
        if diag.is_claimed(sid, Claim.RETRANS):
            continue
        c = diag.cap.conn(sid)
        best = _most_sent(c)
        if len(best) < MIN_SENDS:
            continue
        x = c.side[best[0]]
        end = seq_add(c.seq[best[0]], c.plen[best[0]])
        acked = next(
            (j for j in range(best[-1] + 1, c.n) if c.side[j] != x and c.acks(j, end)), None
        )
        gaps = [c.dt(a, b) for a, b in itertools.pairwise(best)]
        # RTO backoff: the waits never shrink and at least double overall (a tail-loss probe
        # may repeat the first wait)
        backoff = all(g2 >= 0.9 * g1 for g1, g2 in itertools.pairwise(gaps)) and (
            gaps[-1] >= 1.8 * gaps[0]
        )
        if not backoff:
            continue  # fast retransmits or a sender repeating itself: not an RTO ladder
        end_ns = diag.cap.end_ns
        stall = c.dt(best[0], acked) if acked is not None else (end_ns - c.ts[best[0]]) / 1e9
        rows = [(best[0], f"{WHO[x]} sends {c.plen[best[0]]} bytes")]
        rows += [
            (i, f"retransmission {k + 1} (+{c.dt(best[0], i):.3f} s), no ACK")
            for k, i in enumerate(best[1:])
        ]
        rst = c.next_rst(x, best[-1])
        if acked is not None:
            rows.append((acked, f"finally acknowledged after {fmt_s(stall)}"))
        elif rst is not None:
            rows.append((rst, f"{WHO[x]} gives up: RST"))
            diag.claim(c.sid)
        pf = c.first_fin(1 - x)
        peer_closed = pf is not None and pf < best[0]
        if peer_closed and acked is None:
            assert pf is not None
            rows.append((pf, f"{WHO[1 - x]} had already closed (FIN)"))
        facts = {
            "peer_closed": peer_closed,
            "sender": WHO[x],
            "sends": len(best),
            "stall_s": round(stall, 3),
            "recovered": acked is not None,
            "ladder_s": [round(c.dt(best[0], i), 3) for i in best],
        }
        hits.add(c.server, c, rows, facts)
    # the text tells about the longest stall
    return hits.findings(diag, KIND, _tell, lambda i: -i.facts["stall_s"])


def _most_sent(c: Conn) -> list[int]:
    """The local rows of the data segment sent most often (one side, one sequence number)."""
    best: list[int] = []
    for x in (0, 1):
        by_seq: dict[int, list[int]] = defaultdict(list)
        for i in range(c.n):
            if c.side[i] == x and c.plen[i] > 0 and not c.flags[i] & (SYN | RST):
                by_seq[c.seq[i]].append(i)
        for sends in by_seq.values():
            if len(sends) > len(best):
                best = sends
    return best


def _tell(g: Group) -> Story:
    server, c, n, f = g.key, g.c, g.n, g.facts
    summary = (
        f"{plural(n, 'connection')} to {server}: data retransmitted with exponential backoff "
        f"and {'never acknowledged' if not f['recovered'] else 'acknowledged late'} "
        f"(stall {fmt_s(f['stall_s'])})"
    )
    ladder = ", +".join(f"{v:g}" for v in f["ladder_s"])
    explanation = (
        f"On {c.label()} the {f['sender']} sent a segment that "
        f"was never acknowledged and its kernel sent it {plural(f['sends'], 'time')}: at +{ladder} s. "
        "The gaps double each time — the retransmission timer (RTO, at least 200 ms) backing "
        "off — which means nothing at all came back, not even duplicate ACKs: the path (or "
        "the peer) went dark. "
        + (
            f"It was acknowledged after {fmt_s(f['stall_s'])}: a long stall, but the "
            "connection survived."
            if f["recovered"]
            else "With default settings Linux keeps retrying for about 15 minutes "
            "(net.ipv4.tcp_retries2=15) before the socket fails with ETIMEDOUT, sending no "
            "RST; TCP_USER_TIMEOUT or an application deadline ends it sooner."
        )
    )
    causes = [
        "The peer host died or lost its network (no RST comes back from a dead host).",
        "A firewall, NAT or load balancer dropped the connection's state (often after an "
        "idle timeout) and discards its packets.",
        "A path MTU black hole, if only full-size segments go unacknowledged.",
        "Heavy loss or congestion on the path.",
    ]
    fixes = [
        knowledge.advice(
            "Bound how long a request may hang: TCP_USER_TIMEOUT on the socket (Linux), "
            "application read/request deadlines; net.ipv4.tcp_retries2 host-wide (keep ≥ 8).",
            knowledge.Fix(
                "linux",
                "TCP_USER_TIMEOUT",
                None,
                "on the socket: bounds how long a request may hang",
            ),
            knowledge.Fix("any", None, None, "application read/request deadlines"),
            knowledge.sysctl("net.ipv4.tcp_retries2", None, "host-wide (keep ≥ 8)"),
        ),
        "Capture on the other end too: a segment seen leaving here and never arriving there "
        "was lost in the path; check firewall/NAT idle timeouts and use keep-alive below "
        "them.",
    ]
    if f["peer_closed"] and not f["recovered"]:
        explanation += (
            f" The {'client' if f['sender'] == 'server' else 'server'} had closed its side "
            "before this segment was first sent, so no request or response waited on it: "
            f"what never completes is the {f['sender']}'s own close, its socket retrying "
            "until the retries run out."
        )
    facts = {"server": server, **f}
    errors = knowledge.TIMEOUT
    # an error when an exchange the peer still waited for hung; after the peer had closed,
    # only the sender's close hangs
    failed = sum(1 for i in g.inst if not i.facts["recovered"] and not i.facts["peer_closed"])
    sev = Severity.ERROR if failed else Severity.WARNING
    return Story(sev, summary, explanation, causes, fixes, errors, facts)
