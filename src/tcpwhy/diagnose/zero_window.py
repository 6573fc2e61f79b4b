"""zero-window-stall: a receiver advertises window 0 and the sender must wait."""

from __future__ import annotations

from tcpwhy.arrays import unique_sorted
from tcpwhy.decode.table import RST, SYN
from tcpwhy.diagnose import knowledge
from tcpwhy.diagnose.common import Group, Hits
from tcpwhy.diagnose.context import WHO, fmt_s
from tcpwhy.diagnose.model import Finding, Severity, Story
from tcpwhy.diagnose.probes import probes
from tcpwhy.diagnose.registry import Claim, Diag, plural, rule

ORDER = 180

KIND = "zero-window-stall"


@rule(KIND)
def detect(diag: Diag) -> list[Finding]:
    cap = diag.cap
    limit_s = diag.settings.zero_window_s
    hits = Hits()
    for sid in unique_sorted(cap.stream[cap.flag("zero_window")]):
        c = cap.conn(int(sid))
        zero = c.flag("zero_window")
        for r in (0, 1):  # the receiver that closed its window
            z = [i for i in range(c.n) if c.side[i] == r and zero[i]]
            if not z:
                continue
            z0 = z[0]
            reopen = next(
                (
                    i
                    for i in range(z0 + 1, c.n)
                    if c.side[i] == r and c.win[i] > 0 and not c.flags[i] & (SYN | RST)
                ),
                None,
            )
            end_i = reopen if reopen is not None else c.n - 1
            dur = c.dt(z0, end_i) if reopen is not None else (cap.end_ns - c.ts[z0]) / 1e9
            zwp = [p.i for p in probes(c, 1 - r) if p.zero_window and z0 < p.i <= end_i]
            if dur < limit_s and (reopen is not None or not zwp):
                continue
            rows = [(z0, f"{WHO[r]} advertises window 0: its application is not reading")]
            rows += [
                (i, "zero-window probe from the sender (Linux: looks like a keep-alive)")
                for i in zwp[:4]
            ]
            if reopen is not None:
                rows.append((reopen, f"{WHO[r]} opens the window again after {fmt_s(dur)}"))
            facts = {"stall_s": round(dur, 3), "recovered": reopen is not None, "probes": len(zwp)}
            hits.add((c.server, r), c, rows, facts)
            diag.claim(c.sid, Claim.RETRANS)
    # the text tells about the longest stall
    return hits.findings(diag, KIND, _tell, lambda i: -i.facts["stall_s"])


def _tell(g: Group) -> Story:
    (server, r), ex, c, n, f = g.key, g.ex, g.c, g.n, g.facts
    who, snd = WHO[r], WHO[1 - r]
    unrec = g.n - g.count("recovered")
    summary = (
        f"{plural(n, 'connection')} to {server} stalled: the {who} stopped reading and "
        f"advertised a zero window (longest {fmt_s(max(g.values('stall_s')))})"
    )
    explanation = (
        f"On {c.label()} the {who}'s receive buffer filled up "
        f"and its kernel advertised window 0 (frame {c.frame[ex.rows[0][0]]}): its "
        f"application had stopped reading. The {snd} could not send more; its kernel "
        f"probed the window with backoff ({plural(f['probes'], 'probe')} seen — Linux sends "
        "them as empty segments one byte behind, which Wireshark labels 'TCP Keep-Alive') "
        "and got window 0 back each time. "
        + (
            f"After {fmt_s(f['stall_s'])} the {who} read again and reopened the window; the "
            "transfer resumed. Nothing was lost, only time."
            if f["recovered"]
            else f"The window was still closed {fmt_s(f['stall_s'])} later, when the capture ended."
        )
        + f" The {snd}'s write() blocks meanwhile (or its buffer grows), until an "
        "application timeout fires."
    )
    causes = [
        f"The {who} application is slow or stuck: a blocked thread, a GC pause, a full "
        "downstream queue, or a bug that stops reading.",
        f"A small fixed receive buffer (SO_RCVBUF) on the {who}.",
        "Both sides writing and neither reading (when both windows are zero).",
    ]
    fixes = [
        f"Find why the {who} stops reading: `ss -tmi` shows Recv-Q full on the {who} and "
        f"Send-Q with a persist timer on the {snd}; take a thread dump during the stall.",
        knowledge.advice(
            "Let the kernel autotune buffers (net.ipv4.tcp_rmem) instead of small fixed "
            "SO_RCVBUF; add application read/write timeouts and TCP_USER_TIMEOUT to bound the "
            "wait.",
            knowledge.sysctl(
                "net.ipv4.tcp_rmem",
                None,
                "let the kernel autotune receive buffers instead of small fixed SO_RCVBUF",
            ),
            knowledge.Fix(
                "linux",
                "TCP_USER_TIMEOUT",
                None,
                "with application read/write timeouts, bounds the wait",
            ),
        ),
    ]
    return Story(
        Severity.WARNING,
        summary,
        explanation,
        causes,
        fixes,
        [
            f"{snd}: write timeouts (SocketTimeoutException: Write timed out, "
            "context deadline exceeded, ETIMEDOUT) or nothing at all, just slowness"
        ],
        {"server": server, "receiver": who, "unrecovered": unrec},
    )
