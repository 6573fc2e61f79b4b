"""retransmission-timeout: the same data sent again and again with doubling gaps, unacknowledged (P7, K10)."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np

from tcpwhy.decode.table import RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.context import WHO, fmt_s, seq_geq
from tcpwhy.diagnose.model import Finding, Severity
from tcpwhy.diagnose.registry import Diag, Instance, make_finding, plural, rule

KIND = "retransmission-timeout"
MIN_SENDS = 3


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    t = cap.table
    if not len(t):
        return []
    m = (t["payload_len"] > 0) & ((t["flags"] & (SYN | RST)) == 0)
    if not m.any():
        return []
    key = np.stack([cap.stream[m], cap.side[m].astype(np.int64), t["seq"][m].astype(np.int64)], 1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    cand = sorted({int(s) for s in cap.stream[m][cnt[inv.ravel()] >= MIN_SENDS]})
    groups: dict[str, list[Instance]] = defaultdict(list)
    for sid in cand:
        if diag.is_claimed(sid, "retrans"):
            continue
        c = cap.conn(sid)
        best: list[int] = []
        for x in (0, 1):
            by_seq: dict[int, list[int]] = defaultdict(list)
            for i in range(c.n):
                if c.side[i] == x and c.plen[i] > 0 and not c.flags[i] & (SYN | RST):
                    by_seq[c.seq[i]].append(i)
            for sends in by_seq.values():
                if len(sends) > len(best):
                    best = sends
        if len(best) < MIN_SENDS:
            continue
        x = c.side[best[0]]
        end = (c.seq[best[0]] + c.plen[best[0]]) & 0xFFFFFFFF
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
        stall = c.dt(best[0], acked) if acked is not None else (cap.end_ns - c.ts[best[0]]) / 1e9
        rows = [(best[0], f"{WHO[x]} sends {c.plen[best[0]]} bytes")]
        rows += [
            (i, f"retransmission {k + 1} (+{c.dt(best[0], i):.3f} s), no ACK")
            for k, i in enumerate(best[1:])
        ]
        rst = next((j for j in range(best[-1] + 1, c.n) if c.side[j] == x and c.is_rst(j)), None)
        if acked is not None:
            rows.append((acked, f"finally acknowledged after {fmt_s(stall)}"))
        elif rst is not None:
            rows.append((rst, f"{WHO[x]} gives up: RST"))
            diag.claim(c.sid)
        groups[c.server].append(
            Instance(
                c,
                rows,
                {
                    "sender": WHO[x],
                    "sends": len(best),
                    "stall_s": round(stall, 3),
                    "recovered": acked is not None,
                    "ladder_s": [round(c.dt(best[0], i), 3) for i in best],
                },
            )
        )
        _ = seq_geq
    out = []
    for server, inst in groups.items():
        ex = max(inst, key=lambda i: i.facts["stall_s"])
        c = ex.conn
        f = ex.facts
        n = len(inst)
        lost = sum(1 for i in inst if not i.facts["recovered"])
        summary = (
            f"{plural(n, 'connection')} to {server}: data retransmitted with exponential backoff "
            f"and {'never acknowledged' if not f['recovered'] else 'acknowledged late'} "
            f"(stall {fmt_s(f['stall_s'])})"
        )
        ladder = ", +".join(f"{v:g}" for v in f["ladder_s"])
        explanation = (
            f"On stream {c.sid} ({c.client} → {c.server}) the {f['sender']} sent a segment that "
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
            "Bound how long a request may hang: TCP_USER_TIMEOUT on the socket (Linux), "
            "application read/request deadlines; net.ipv4.tcp_retries2 host-wide (keep ≥ 8).",
            "Capture on the other end too: a segment seen leaving here and never arriving there "
            "was lost in the path; check firewall/NAT idle timeouts and use keep-alive below "
            "them.",
        ]
        out.append(
            make_finding(
                diag,
                KIND,
                Severity.ERROR if lost else Severity.WARNING,
                summary,
                inst,
                explanation,
                causes,
                fixes,
                knowledge.TIMEOUT,
                {"server": server, **f},
            )
        )
    return out
